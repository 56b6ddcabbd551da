// Folded inference BatchNorm + residual add + ReLU: y = relu(x * scale[c] + shift[c] (+ residual)).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace rsn_fast {

// x: (N, C, H, W) float32/float16/bfloat16, any strides (channels-last dense inputs stay channels-last).
// scale, shift: (C,) floating, same device as x (converted to float32). residual: like x, or none.
// Returns y with x's dtype, channels-last when x is channels-last dense, else contiguous. Computes in fp32.
at::Tensor bn_add_relu_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                           const std::optional<at::Tensor>& residual, bool relu);
#ifdef RSN_FAST_WITH_CUDA
at::Tensor bn_add_relu_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                            const std::optional<at::Tensor>& residual, bool relu);
#endif

}  // namespace rsn_fast
