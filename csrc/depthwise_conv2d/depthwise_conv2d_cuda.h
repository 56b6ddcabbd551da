// Launchers of the depthwise convolution CUDA kernels. Torch-free, so the .cu file compiles without torch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/cuda_types.h"

namespace rsn_fast {

// y[n,c,h,w] = b[c] + sum_{i,j<k} x[n,c,h+i-pad,w+j-pad] * w[c,i,j] (w[c,k-1-i,k-1-j] when flip), zero padding.
// x: (n, c, h_in, w_in), y: (n, c, h_out, w_out), both dense NCHW (channels_last false) or NHWC (true), type
// dtype. w: (c, k, k) float32 contiguous. b: float32 (c,) or null. Accumulates in float32.
// stats: null, or float32 (2, P, c) with P = depthwise_conv2d_stats_rows(...): stats[0, r, c] / stats[1, r, c]
// are the sum / sum of squares of the (rounded) outputs of channel c in block row r; the caller sums over r
// (a fixed-order reduction, so the result is deterministic).
cudaError_t launch_depthwise_conv2d(const void* x, const float* w, const float* b, void* y, int64_t n, int64_t c,
                                    int64_t h_in, int64_t w_in, int64_t h_out, int64_t w_out, int k, int pad,
                                    bool flip, bool channels_last, DType dtype, cudaStream_t stream,
                                    float* stats = nullptr);

// P, the number of per-block partial sums per channel launch_depthwise_conv2d writes with stats.
int64_t depthwise_conv2d_stats_rows(int64_t n, int64_t c, int64_t h_out, int64_t w_out, bool channels_last);

// How many partial sums per channel launch_depthwise_conv2d_wgrad writes for this problem (fills the GPU).
int depthwise_conv2d_wgrad_chunks(int64_t n, int64_t c, int64_t h_out, int64_t w_out);

// part[chunk, c, i*k+j] = sum over the chunk's (n, tile) of g[n,c,h,w] * x[n,c,h+i-pad,w+j-pad]; the caller sums
// over chunk. g: (n, c, h_out, w_out), x: (n, c, h_in, w_in), dense NCHW, type dtype. part: float32
// (chunks, c, k*k) with chunks = depthwise_conv2d_wgrad_chunks(...).
cudaError_t launch_depthwise_conv2d_wgrad(const void* g, const void* x, float* part, int chunks, int64_t n,
                                          int64_t c, int64_t h_in, int64_t w_in, int64_t h_out, int64_t w_out,
                                          int k, int pad, DType dtype, cudaStream_t stream);

}  // namespace rsn_fast
