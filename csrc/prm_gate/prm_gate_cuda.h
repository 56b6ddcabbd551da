// Launchers of the fused PRM spatial gate CUDA kernels (math: rsn_fast/ops/prm_gate/reference.py). Torch-free,
// so the .cu file compiles without torch headers.
//
// Feature maps (N, C, H, W) are dense NCHW (channels_last false) or dense NHWC (true), element type `dtype`;
// o2 is dense (N, C) of `dtype`; per-pixel maps (p, dq, dp) are float32 (N, H*W); per-channel vectors float32.
// Everything accumulates in float32. Reductions write per-block partials that the caller sums over the block
// dimension in a fixed order (no float atomics), so every result is deterministic.
// Block tiles: kPrmTileP pixels of one image, all channels; grid (tiles, N).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/cuda_types.h"

namespace rsn_fast {

constexpr int kPrmTileP = 64;

inline int64_t prm_gate_tiles(int64_t hw) { return (hw + kPrmTileP - 1) / kPrmTileP; }

// p[n, x] = sum_c pw[c] * relu(z[n, c, x] * ss[c] + ss[C + c]); part (N * tiles, 2) = per-tile sum, sum of squares
// of p. ss: (2, C) [scale; shift] of the folded BN_d.
cudaError_t launch_prm_pointwise(const void* z, const float* ss, const float* pw, float* p, float* part, int64_t n,
                                 int64_t c, int64_t hw, bool channels_last, DType dtype, cudaStream_t stream);

// out = o1 * (1 + o2[n, c] * sigmoid(relu(p[n, x] * bnp[0] + bnp[1]))).
cudaError_t launch_prm_gate(const float* p, const float* bnp, const void* o1, const void* o2, void* out, int64_t n,
                            int64_t c, int64_t hw, bool channels_last, DType dtype, cudaStream_t stream);

// Eval forward in one kernel: BN_d folded into the depthwise weight wf (C, k*k) and shift_d (C,); pw (C,);
// bnp (2,) BN_p folded [scale, shift]. u, o1, out: (N, C, h, w).
cudaError_t launch_prm_gate_eval(const void* u, const float* wf, const float* shift_d, const float* pw,
                                 const float* bnp, const void* o1, const void* o2, void* out, int64_t n, int64_t c,
                                 int64_t h, int64_t w, int k, bool channels_last, DType dtype, cudaStream_t stream);

// Gate backward for upstream g: do1 = g * (1 + o2 * beta); do2_part (N, tiles, C) = per-tile sum of g * o1 * beta;
// dq (N, H*W) = [q > 0] * beta * (1 - beta) * sum_c g * o1 * o2 with q = p * bnp4[0] + bnp4[1];
// part (N * tiles, 2) = per-tile sums of dq and dq * (p - bnp4[2]) * bnp4[3].
cudaError_t launch_prm_gate_bwd(const void* g, const void* o1, const void* o2, const float* p, const float* bnp4,
                                void* do1, float* do2_part, float* dq, float* part, int64_t n, int64_t c,
                                int64_t hw, bool channels_last, DType dtype, cudaStream_t stream);

// BN_d backward. cv: float32 (6, C) [mean, rstd, gamma, beta, mean(dr), mean(dr * z_hat)] with
// z_hat = (z - mean) * rstd, y = gamma * z_hat + beta, dr = dp * pw[c] * [y > 0].
// Sums: part (N * tiles, 3, C) = per-tile sums of dp * relu(y), dr, dr * z_hat.
cudaError_t launch_prm_bn_d_bwd_sums(const void* z, const float* dp, const float* cv, const float* pw, float* part,
                                     int64_t n, int64_t c, int64_t hw, bool channels_last, DType dtype,
                                     cudaStream_t stream);

// dz = gamma * rstd * (dr - mean(dr) - z_hat * mean(dr * z_hat)), dz like z.
cudaError_t launch_prm_bn_d_bwd(const void* z, const float* dp, const float* cv, const float* pw, void* dz,
                                int64_t n, int64_t c, int64_t hw, bool channels_last, DType dtype,
                                cudaStream_t stream);

}  // namespace rsn_fast
