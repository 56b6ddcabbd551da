// depthwise_conv2d: input checks and launches of the CUDA kernels (depthwise_conv2d_cuda.cu).
// Ops: depthwise_conv2d_fwd_cuda(x, weight, bias?, padding) -> y
//      depthwise_conv2d_stats_cuda(x, weight, padding) -> (y, float64 (2, C) [sum, sum of squares] of y)
//      depthwise_conv2d_bwd_cuda(grad, x, weight, padding, need_input, need_weight, need_bias) -> (dx, dw, db)
// (unneeded gradients come back as empty tensors). Schemas in csrc/bindings.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <tuple>

#include "common/checks.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"

#include "depthwise_conv2d/depthwise_conv2d_cuda.h"
#endif

namespace rsn_fast {

#ifdef RSN_FAST_WITH_CUDA
namespace {

constexpr const char* kOp = "rsn_fast::depthwise_conv2d";

void check_args(const at::Tensor& x, const at::Tensor& weight, int64_t pad) {
  check_ndim(x, 4, kOp, "x");
  check_float_dtype(x, kOp, "x");
  RSN_CHECK_ARG(on_cuda_device(x), kOp, "x", "must be ", cuda_device_name(), ", got ", x.device());
  check_ndim(weight, 4, kOp, "weight");
  check_same_device(weight, x, kOp, "weight", "x");
  RSN_CHECK_ARG(weight.size(0) == x.size(1) && weight.size(1) == 1 && weight.size(2) == weight.size(3), kOp,
                "weight", "must have shape (C, 1, k, k) with C = ", x.size(1), ", got ", weight.sizes());
  const int64_t k = weight.size(2);
  RSN_CHECK_ARG(k % 2 == 1 && k >= 1 && k <= 31, kOp, "weight", "kernel size must be odd and <= 31, got ", k);
  RSN_CHECK_ARG(pad >= 0 && pad < k, kOp, "padding", "must be in [0, ", k - 1, "], got ", pad);
}

// y (layout of x) = depthwise conv of x by w32 (float32 (C, k, k)), optional float32 bias. With `stats`
// (an undefined tensor to fill), also the per-block partial channel sums float32 (2, P, C).
at::Tensor conv(const at::Tensor& x, const at::Tensor& w32, const at::Tensor& b32, int64_t k, int64_t pad,
                bool flip, int64_t h_out, int64_t w_out, at::Tensor* stats = nullptr) {
  const bool cl = use_channels_last(x);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor xc = x.contiguous(fmt);
  at::Tensor y = at::empty({x.size(0), x.size(1), h_out, w_out}, x.options().memory_format(fmt));
  float* part = nullptr;
  if (stats != nullptr) {
    const int64_t rows = depthwise_conv2d_stats_rows(x.size(0), x.size(1), h_out, w_out, cl);
    *stats = at::empty({2, rows, x.size(1)}, x.options().dtype(at::kFloat));
    part = stats->mutable_data_ptr<float>();
  }
  const cudaError_t err = launch_depthwise_conv2d(
      xc.const_data_ptr(), w32.const_data_ptr<float>(), b32.defined() ? b32.const_data_ptr<float>() : nullptr,
      y.mutable_data_ptr(), x.size(0), x.size(1), x.size(2), x.size(3), h_out, w_out, static_cast<int>(k),
      static_cast<int>(pad), flip, cl, to_dtype(x.scalar_type()), cuda_stream(),
      part);
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA kernel launch failed: ", cuda_error_string(err));
  return y;
}

}  // namespace

at::Tensor depthwise_conv2d_fwd_cuda(const at::Tensor& x, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, int64_t padding) {
  const CudaDeviceGuard guard(x.device());
  check_args(x, weight, padding);
  const int64_t k = weight.size(2);
  at::Tensor b32;
  if (bias.has_value() && bias->defined()) {
    RSN_CHECK_ARG(bias->dim() == 1 && bias->size(0) == x.size(1), kOp, "bias", "must have shape (",
                  x.size(1), "), got ", bias->sizes());
    check_same_device(*bias, x, kOp, "bias", "x");
    b32 = bias->to(at::kFloat).contiguous();
  }
  const at::Tensor w32 = weight.to(at::kFloat).contiguous();
  return conv(x, w32, b32, k, padding, false, x.size(2) + 2 * padding - k + 1, x.size(3) + 2 * padding - k + 1);
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_stats_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                               int64_t padding) {
  const CudaDeviceGuard guard(x.device());
  check_args(x, weight, padding);
  const int64_t k = weight.size(2);
  const at::Tensor w32 = weight.to(at::kFloat).contiguous();
  at::Tensor part;
  at::Tensor y = conv(x, w32, at::Tensor(), k, padding, false, x.size(2) + 2 * padding - k + 1,
                      x.size(3) + 2 * padding - k + 1, &part);
  // fixed-order sum of the per-block partials (no atomics): deterministic channel statistics
  return {y, at::sum(part, {1}, false, at::kDouble)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv2d_bwd_cuda(const at::Tensor& grad,
                                                                         const at::Tensor& x,
                                                                         const at::Tensor& weight, int64_t padding,
                                                                         bool need_input, bool need_weight,
                                                                         bool need_bias) {
  const CudaDeviceGuard guard(x.device());
  check_args(x, weight, padding);
  const int64_t k = weight.size(2), n = x.size(0), c = x.size(1);
  const int64_t h_out = x.size(2) + 2 * padding - k + 1, w_out = x.size(3) + 2 * padding - k + 1;
  RSN_CHECK_ARG(grad.dim() == 4 && grad.size(0) == n && grad.size(1) == c && grad.size(2) == h_out &&
                    grad.size(3) == w_out,
                kOp, "grad", "must have shape (", n, ", ", c, ", ", h_out, ", ", w_out, "), got ", grad.sizes());
  RSN_CHECK_ARG(grad.scalar_type() == x.scalar_type(), kOp, "grad", "must have x's dtype ", x.scalar_type());
  at::Tensor dx = at::empty({0}, x.options()), dw = at::empty({0}, x.options()), db = at::empty({0}, x.options());
  // grad may be an expanded (stride-0) view: bring it to x's layout
  const auto fmt = use_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor g = grad.contiguous(fmt);
  if (need_input) {
    const at::Tensor w32 = weight.to(at::kFloat).contiguous();
    dx = conv(g, w32, at::Tensor(), k, k - 1 - padding, true, x.size(2), x.size(3));
  }
  if (need_weight) {
    // the weight-gradient kernel reads NCHW planes; channels-last inputs are transposed first
    const at::Tensor gc = g.contiguous(), xc = x.contiguous();
    const int chunks = depthwise_conv2d_wgrad_chunks(n, c, h_out, w_out);
    at::Tensor part = at::empty({chunks, c, k * k}, x.options().dtype(at::kFloat));
    const cudaError_t err = launch_depthwise_conv2d_wgrad(
        gc.const_data_ptr(), xc.const_data_ptr(), part.mutable_data_ptr<float>(), chunks, n, c, x.size(2),
        x.size(3), h_out, w_out, static_cast<int>(k), static_cast<int>(padding), to_dtype(x.scalar_type()),
        cuda_stream());
    TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA wgrad kernel launch failed: ", cuda_error_string(err));
    dw = at::sum(part, {0}).view({c, 1, k, k}).to(x.scalar_type());
  }
  if (need_bias) db = at::sum(g, {0, 2, 3}, false, at::kFloat).to(x.scalar_type());
  return {dx, dw, db};
}

TORCH_LIBRARY_IMPL(rsn_fast, RSN_FAST_CUDA_KEY, m) {
  m.impl("depthwise_conv2d_fwd_cuda", &depthwise_conv2d_fwd_cuda);
  m.impl("depthwise_conv2d_stats_cuda", &depthwise_conv2d_stats_cuda);
  m.impl("depthwise_conv2d_bwd_cuda", &depthwise_conv2d_bwd_cuda);
}
#endif

}  // namespace rsn_fast
