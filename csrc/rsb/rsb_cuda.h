// Launchers of the fused RSB elementwise / statistics CUDA kernels that surround the cuDNN convolutions of the
// "cuda" backend of rsn_fast.ops.rsb (math: rsn_fast/ops/rsb/reference.py). Torch-free, so the .cu file compiles
// without torch headers.
//
// Feature maps are (N, C, H, W). "Dense" maps are NCHW-contiguous (channels_last false) or NHWC-contiguous
// (true); source maps are read through explicit element strides (channel slices of a channels-last tensor are
// read in place). Element type `dtype` for every map of one call; per-channel vectors are float32.
// Everything accumulates in float32. Per-channel reductions write per-block partials `part` (slots, NV, C) that
// the caller sums over the slot dimension in a fixed order (no float atomics): deterministic results.
//   NCHW: one block per (n, c) plane, slots = N;  NHWC: one block per (kRsbTileRows pixels, 32 channels),
//   slots = rsb_slots(...).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/cuda_types.h"

namespace rsn_fast {

constexpr int kRsbMaxSrc = 4;
constexpr int kRsbTileRows = 256;

// Up to four source maps of one shape (N, c_src, H, W) with their strides (n, c, h, w) in elements.
struct RsbSources {
  const void* ptr[kRsbMaxSrc];
  int64_t stride[kRsbMaxSrc][4];
  int count;
};

// Number of partial-sum slots of a per-channel reduction over a dense (N, C, H, W) map.
inline int64_t rsb_slots(int64_t n, int64_t hw, bool channels_last) {
  return channels_last ? (n * hw + kRsbTileRows - 1) / kRsbTileRows : n;
}

// Prologue: u (dense) = sum_k act(src_k * scale[k*C + c] + shift[k*C + c]) (cat false: u has c_src channels),
// or the channel concat of act(src_k * scale + shift) (cat true: u has count * c_src channels).
// act = ReLU when relu; scale/shift may be null (no affine).
cudaError_t launch_rsb_prologue(const RsbSources& srcs, const float* scale, const float* shift, bool relu, bool cat,
                                void* u, int64_t n, int64_t c_src, int64_t h, int64_t w, bool channels_last,
                                DType dtype, cudaStream_t stream);

// part (slots, 2, C): per-slot sums of z and z * z over the slot's pixels, z dense (N, C, H, W).
cudaError_t launch_rsb_channel_stats(const void* z, float* part, int64_t n, int64_t c, int64_t hw,
                                     bool channels_last, DType dtype, cudaStream_t stream);

// g (dense) = grad_z + grad_sum[c] + 2 * z * grad_sumsq[c]: the statistics' gradients folded into the conv
// output gradient. grad_z (dense, like z) and the vectors may be null (zero).
cudaError_t launch_rsb_grad_fold(const void* grad_z, const float* grad_sum, const float* grad_sumsq, const void* z,
                                 void* g, int64_t n, int64_t c, int64_t hw, bool channels_last, DType dtype,
                                 cudaStream_t stream);

// Prologue backward, one pass: for each source k with pre = src_k * a + b (or src_k without affine),
//   d_k = du[.., c(k), ..] * [pre > 0 if relu] * a   (written dense like du into dsrc[k], dtype of du)
// and per-channel partial sums of du * mask * src_k (-> d scale) and du * mask (-> d shift).
// cat false: du has c_src channels and every source reads all of them; part (slots, 2 * kRsbMaxSrc, c_src) with
//   rows 2k, 2k + 1 for source k (rows of absent sources are zero).
// cat true: du has count * c_src channels, source k owns channels [k * c_src, (k + 1) * c_src); part (slots, 2,
//   count * c_src).
cudaError_t launch_rsb_prologue_bwd(const void* du, const RsbSources& srcs, const float* scale, const float* shift,
                                    bool relu, bool cat, void* const* dsrc, float* part, int64_t n, int64_t c_src,
                                    int64_t h, int64_t w, bool channels_last, DType dtype, cudaStream_t stream);

// Final epilogue of the block: out = relu(z * a[c] + b[c] + r'), r' = r * ra[c] + rb[c] (downsample BN) or r
// (identity) when ra is null. All maps dense in one layout.
cudaError_t launch_rsb_epilogue(const void* z, const float* a, const float* b, const void* r, const float* ra,
                                const float* rb, void* out, int64_t n, int64_t c, int64_t hw, bool channels_last,
                                DType dtype, cudaStream_t stream);

// Epilogue backward: m = grad * [out > 0]; dz = m * a[c]; dr = m * ra[c] (or m when ra is null); part (slots, 3,
// C) = per-slot sums of m * z, m, m * r.
cudaError_t launch_rsb_epilogue_bwd(const void* grad, const void* out, const void* z, const void* r,
                                    const float* a, const float* ra, void* dz, void* dr, float* part, int64_t n,
                                    int64_t c, int64_t hw, bool channels_last, DType dtype, cudaStream_t stream);

}  // namespace rsn_fast
