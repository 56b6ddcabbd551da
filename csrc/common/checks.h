// Input checks shared by every op. Messages name the argument, so a user sees which input is wrong.
#pragma once

#include <torch/library.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "common/cuda_types.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"
#endif

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

// The .cu launchers' element type for a supported float dtype (call check_float_dtype first).
inline DType to_dtype(at::ScalarType st) {
  return st == at::kFloat ? DType::kFloat32 : st == at::kHalf ? DType::kFloat16 : DType::kBFloat16;
}

inline at::MemoryFormat format_of(const at::Tensor& t) {
  return use_channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

#ifdef RSN_FAST_WITH_CUDA
// A 4-D CUDA feature map of a supported float dtype; `like` (if given) fixes shape, dtype and device.
inline void check_cuda_map(const at::Tensor& t, const char* op, const char* name, const at::Tensor* like = nullptr,
                           const char* like_name = "") {
  check_ndim(t, 4, op, name);
  RSN_CHECK_ARG(on_cuda_device(t), op, name, "must be ", cuda_device_name(), ", got ", t.device());
  check_float_dtype(t, op, name);
  // The PRM and RSB kernels put N in grid.y, whose limit is 65535 (a larger N would be a failed launch).
  RSN_CHECK_ARG(t.size(0) <= 65535, op, name, "batch size N = ", t.size(0), " exceeds the CUDA grid.y limit 65535 ",
                "of these kernels; split the batch");
  if (like != nullptr) {
    RSN_CHECK_ARG(t.sizes() == like->sizes(), op, name, "must have the shape of '", like_name, "' ",
                  like->sizes(), ", got ", t.sizes());
    RSN_CHECK_ARG(t.scalar_type() == like->scalar_type(), op, name, "must have the dtype of '", like_name, "' (",
                  like->scalar_type(), "), got ", t.scalar_type());
    check_same_device(t, *like, op, name, like_name);
  }
}
#endif  // RSN_FAST_WITH_CUDA

}  // namespace rsn_fast
