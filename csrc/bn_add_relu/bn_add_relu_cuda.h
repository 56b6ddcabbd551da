// Launcher of the bn_add_relu CUDA kernel. Torch-free, so the .cu file compiles without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/cuda_types.h"

namespace rsn_fast {

// y = relu(x * scale[c] + shift[c] (+ residual)) over an (N, C, H, W) tensor, computed in fp32.
// x, residual, y: dense NCHW (channels_last == false) or NHWC (channels_last == true), element type dtype.
// scale, shift: fp32 (C,). residual may be null. Returns the launch error (cudaSuccess when fine).
cudaError_t launch_bn_add_relu(const void* x, const float* scale, const float* shift, const void* residual,
                               void* y, int64_t n, int64_t c, int64_t hw, bool channels_last, bool relu,
                               DType dtype, cudaStream_t stream);

}  // namespace rsn_fast
