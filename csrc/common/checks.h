// Input checks shared by every op. Messages name the argument, so a user sees which input is wrong.
#pragma once

#include <torch/library.h>
#include <ATen/core/Tensor.h>

#include <string>

namespace rsn_fast {

// Raised as c10::ValueError -> Python ValueError, with "<op>: <arg> ..." in the message.
#define RSN_CHECK_ARG(cond, op, arg, ...) TORCH_CHECK_VALUE(cond, op, ": argument '", arg, "' ", __VA_ARGS__)

inline void check_ndim(const at::Tensor& t, int64_t ndim, const char* op, const char* arg) {
  RSN_CHECK_ARG(t.dim() == ndim, op, arg, "must have ", ndim, " dimensions, got ", t.dim(), " (shape ",
                t.sizes(), ")");
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* arg,
                              const char* ref_arg) {
  RSN_CHECK_ARG(t.device() == ref.device(), op, arg, "is on ", t.device(), " but '", ref_arg, "' is on ",
                ref.device());
}

inline void check_float_dtype(const at::Tensor& t, const char* op, const char* arg) {
  const auto st = t.scalar_type();
  RSN_CHECK_ARG(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, op, arg,
                "must be float32, float16 or bfloat16, got ", st);
}

// True when t is channels-last in memory but not also plain contiguous (C == 1 or H*W == 1 are both).
inline bool use_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace rsn_fast
