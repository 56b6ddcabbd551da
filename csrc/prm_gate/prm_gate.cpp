// prm_gate: input checks and launches of the fused PRM spatial gate CUDA kernels (prm_gate_cuda.cu). The phase
// orchestration (which kernel when, the (C,)-sized BatchNorm algebra) lives in rsn_fast/ops/prm_gate/fused.py,
// shared with the Triton kernels; these ops are its "cuda" kernel set. Schemas in csrc/bindings.cpp.
//   prm_gate_pointwise_cuda(z, scale_shift, pw) -> (p, sums float64 (2,))
//   prm_gate_gate_cuda(p, bnp, o1, o2) -> out
//   prm_gate_eval_cuda(o1, o2, u, w_folded, shift_d, pw, bnp) -> out
//   prm_gate_gate_bwd_cuda(grad, o1, o2, p, bnp4) -> (do1, do2 float32 (N, C), dq, sums float64 (2,))
//   prm_gate_bn_d_bwd_sums_cuda(z, dp, cv, pw) -> float64 (3, C)
//   prm_gate_bn_d_bwd_cuda(z, dp, cv, pw) -> dz
// Feature maps come back in the layout of the map they follow (o1 for the gate, z for dz); all partial sums are
// reduced here with at::sum over the block dimension (fixed order, deterministic).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <tuple>

#include "common/checks.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"

#include "prm_gate/prm_gate_cuda.h"
#endif

namespace rsn_fast {

#ifdef RSN_FAST_WITH_CUDA
namespace {

constexpr const char* kOp = "rsn_fast::prm_gate";

void check_map(const at::Tensor& t, const char* name, const at::Tensor* like = nullptr, const char* like_name = "") {
  check_cuda_map(t, kOp, name, like, like_name);
}

// A float32 tensor with `numel` elements on ref's device (per-channel vectors, per-pixel maps); contiguous copy.
at::Tensor f32(const at::Tensor& t, int64_t numel, const char* name, const at::Tensor& ref, const char* ref_name) {
  RSN_CHECK_ARG(t.scalar_type() == at::kFloat, kOp, name, "must be float32, got ", t.scalar_type());
  RSN_CHECK_ARG(t.numel() == numel, kOp, name, "must have ", numel, " elements, got ", t.numel(), " (shape ",
                t.sizes(), ")");
  check_same_device(t, ref, kOp, name, ref_name);
  return t.contiguous();
}

// o2 (N, C, 1, 1) or (N, C) in the dtype of `ref`: a dense (N, C) copy.
at::Tensor channel_weights(const at::Tensor& o2, const at::Tensor& ref) {
  const int64_t n = ref.size(0), c = ref.size(1);
  RSN_CHECK_ARG(o2.numel() == n * c && o2.size(0) == n, kOp, "o2", "must have shape (", n, ", ", c,
                ", 1, 1), got ", o2.sizes());
  RSN_CHECK_ARG(o2.scalar_type() == ref.scalar_type(), kOp, "o2", "must have the dtype of 'o1' (",
                ref.scalar_type(), "), got ", o2.scalar_type());
  check_same_device(o2, ref, kOp, "o2", "o1");
  return o2.reshape({n, c}).contiguous();
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA launch of ", what, " failed: ", cuda_error_string(err));
}

cudaStream_t stream() { return cuda_stream(); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> prm_gate_pointwise_cuda(const at::Tensor& z, const at::Tensor& scale_shift,
                                                           const at::Tensor& pw) {
  check_map(z, "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const at::Tensor ss = f32(scale_shift, 2 * c, "scale_shift", z, "z"), w = f32(pw, c, "pw", z, "z");
  const auto fmt = format_of(z);
  const at::Tensor zc = z.contiguous(fmt);
  at::Tensor p = at::empty({n, hw}, z.options().dtype(at::kFloat));
  at::Tensor part = at::empty({n * prm_gate_tiles(hw), 2}, z.options().dtype(at::kFloat));
  check_launch(launch_prm_pointwise(zc.const_data_ptr(), ss.const_data_ptr<float>(), w.const_data_ptr<float>(),
                                    p.mutable_data_ptr<float>(), part.mutable_data_ptr<float>(), n, c, hw,
                                    fmt == at::MemoryFormat::ChannelsLast, to_dtype(z.scalar_type()), stream()),
               "pointwise");
  return {p, at::sum(part, {0}, false, at::kDouble)};
}

at::Tensor prm_gate_gate_cuda(const at::Tensor& p, const at::Tensor& bnp, const at::Tensor& o1,
                              const at::Tensor& o2) {
  check_map(o1, "o1");
  const CudaDeviceGuard guard(o1.device());
  const int64_t n = o1.size(0), c = o1.size(1), hw = o1.size(2) * o1.size(3);
  const at::Tensor pc = f32(p, n * hw, "p", o1, "o1"), b = f32(bnp, 2, "bnp", o1, "o1");
  const at::Tensor o2c = channel_weights(o2, o1);
  const auto fmt = format_of(o1);
  const at::Tensor o1c = o1.contiguous(fmt);
  at::Tensor out = at::empty(o1.sizes(), o1.options().memory_format(fmt));
  check_launch(launch_prm_gate(pc.const_data_ptr<float>(), b.const_data_ptr<float>(), o1c.const_data_ptr(),
                               o2c.const_data_ptr(), out.mutable_data_ptr(), n, c, hw,
                               fmt == at::MemoryFormat::ChannelsLast, to_dtype(o1.scalar_type()), stream()),
               "gate");
  return out;
}

at::Tensor prm_gate_eval_cuda(const at::Tensor& o1, const at::Tensor& o2, const at::Tensor& u,
                              const at::Tensor& w_folded, const at::Tensor& shift_d, const at::Tensor& pw,
                              const at::Tensor& bnp) {
  check_map(o1, "o1");
  check_map(u, "u", &o1, "o1");
  const CudaDeviceGuard guard(o1.device());
  const int64_t n = o1.size(0), c = o1.size(1), h = o1.size(2), w = o1.size(3);
  RSN_CHECK_ARG(w_folded.dim() == 2 && w_folded.size(0) == c, kOp, "w_folded", "must have shape (", c,
                ", k*k), got ", w_folded.sizes());
  int64_t k = 1;
  while (k * k < w_folded.size(1)) ++k;
  RSN_CHECK_ARG(k * k == w_folded.size(1) && k % 2 == 1 && k <= 31, kOp, "w_folded",
                "must have k*k columns with k odd in [1, 31], got ", w_folded.size(1));
  const at::Tensor wf = f32(w_folded, c * k * k, "w_folded", o1, "o1");
  const at::Tensor sd = f32(shift_d, c, "shift_d", o1, "o1"), wp = f32(pw, c, "pw", o1, "o1");
  const at::Tensor b = f32(bnp, 2, "bnp", o1, "o1");
  const at::Tensor o2c = channel_weights(o2, o1);
  const auto fmt = format_of(o1);
  const at::Tensor o1c = o1.contiguous(fmt), uc = u.contiguous(fmt);
  at::Tensor out = at::empty(o1.sizes(), o1.options().memory_format(fmt));
  check_launch(launch_prm_gate_eval(uc.const_data_ptr(), wf.const_data_ptr<float>(), sd.const_data_ptr<float>(),
                                    wp.const_data_ptr<float>(), b.const_data_ptr<float>(), o1c.const_data_ptr(),
                                    o2c.const_data_ptr(), out.mutable_data_ptr(), n, c, h, w,
                                    static_cast<int>(k), fmt == at::MemoryFormat::ChannelsLast,
                                    to_dtype(o1.scalar_type()), stream()),
               "gate_eval");
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> prm_gate_gate_bwd_cuda(const at::Tensor& grad,
                                                                                  const at::Tensor& o1,
                                                                                  const at::Tensor& o2,
                                                                                  const at::Tensor& p,
                                                                                  const at::Tensor& bnp4) {
  check_map(o1, "o1");
  check_map(grad, "grad", &o1, "o1");
  const CudaDeviceGuard guard(o1.device());
  const int64_t n = o1.size(0), c = o1.size(1), hw = o1.size(2) * o1.size(3), tiles = prm_gate_tiles(hw);
  const at::Tensor pc = f32(p, n * hw, "p", o1, "o1"), b = f32(bnp4, 4, "bnp4", o1, "o1");
  const at::Tensor o2c = channel_weights(o2, o1);
  const auto fmt = format_of(o1);
  // grad may be an expanded (stride-0) view or in another layout: bring it to o1's
  const at::Tensor o1c = o1.contiguous(fmt), g = grad.contiguous(fmt);
  at::Tensor do1 = at::empty(o1.sizes(), o1.options().memory_format(fmt));
  const auto f = o1.options().dtype(at::kFloat);
  at::Tensor do2_part = at::empty({n, tiles, c}, f), dq = at::empty({n, hw}, f), part = at::empty({n * tiles, 2}, f);
  check_launch(launch_prm_gate_bwd(g.const_data_ptr(), o1c.const_data_ptr(), o2c.const_data_ptr(),
                                   pc.const_data_ptr<float>(), b.const_data_ptr<float>(), do1.mutable_data_ptr(),
                                   do2_part.mutable_data_ptr<float>(), dq.mutable_data_ptr<float>(),
                                   part.mutable_data_ptr<float>(), n, c, hw, fmt == at::MemoryFormat::ChannelsLast,
                                   to_dtype(o1.scalar_type()), stream()),
               "gate_bwd");
  return {do1, at::sum(do2_part, {1}), dq, at::sum(part, {0}, false, at::kDouble)};
}

at::Tensor prm_gate_bn_d_bwd_sums_cuda(const at::Tensor& z, const at::Tensor& dp, const at::Tensor& cv,
                                       const at::Tensor& pw) {
  check_map(z, "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const at::Tensor dpc = f32(dp, n * hw, "dp", z, "z"), cvc = f32(cv, 6 * c, "cv", z, "z");
  const at::Tensor wp = f32(pw, c, "pw", z, "z");
  const auto fmt = format_of(z);
  const at::Tensor zc = z.contiguous(fmt);
  at::Tensor part = at::empty({n * prm_gate_tiles(hw), 3, c}, z.options().dtype(at::kFloat));
  check_launch(launch_prm_bn_d_bwd_sums(zc.const_data_ptr(), dpc.const_data_ptr<float>(),
                                        cvc.const_data_ptr<float>(), wp.const_data_ptr<float>(),
                                        part.mutable_data_ptr<float>(), n, c, hw,
                                        fmt == at::MemoryFormat::ChannelsLast, to_dtype(z.scalar_type()), stream()),
               "bn_d_bwd_sums");
  return at::sum(part, {0}, false, at::kDouble);
}

at::Tensor prm_gate_bn_d_bwd_cuda(const at::Tensor& z, const at::Tensor& dp, const at::Tensor& cv,
                                  const at::Tensor& pw) {
  check_map(z, "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const at::Tensor dpc = f32(dp, n * hw, "dp", z, "z"), cvc = f32(cv, 6 * c, "cv", z, "z");
  const at::Tensor wp = f32(pw, c, "pw", z, "z");
  const auto fmt = format_of(z);
  const at::Tensor zc = z.contiguous(fmt);
  at::Tensor dz = at::empty(z.sizes(), z.options().memory_format(fmt));
  check_launch(launch_prm_bn_d_bwd(zc.const_data_ptr(), dpc.const_data_ptr<float>(), cvc.const_data_ptr<float>(),
                                   wp.const_data_ptr<float>(), dz.mutable_data_ptr(), n, c, hw,
                                   fmt == at::MemoryFormat::ChannelsLast, to_dtype(z.scalar_type()), stream()),
               "bn_d_bwd");
  return dz;
}

TORCH_LIBRARY_IMPL(rsn_fast, RSN_FAST_CUDA_KEY, m) {
  m.impl("prm_gate_bn_d_bwd_cuda", &prm_gate_bn_d_bwd_cuda);
  m.impl("prm_gate_bn_d_bwd_sums_cuda", &prm_gate_bn_d_bwd_sums_cuda);
  m.impl("prm_gate_eval_cuda", &prm_gate_eval_cuda);
  m.impl("prm_gate_gate_bwd_cuda", &prm_gate_gate_bwd_cuda);
  m.impl("prm_gate_gate_cuda", &prm_gate_gate_cuda);
  m.impl("prm_gate_pointwise_cuda", &prm_gate_pointwise_cuda);
}
#endif

}  // namespace rsn_fast
