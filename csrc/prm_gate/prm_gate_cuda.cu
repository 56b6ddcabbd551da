// Fused PRM spatial gate CUDA kernels (no torch headers: see prm_gate_cuda.h). sm_70-clean: half and bfloat16
// are only converted with __half2float/__float2half_rn and __bfloat162float/__float2bfloat16_rn (every arch);
// all arithmetic is float32; reductions are fixed-order (warp butterflies, shared-memory loops), no atomics.
//
// Per-tile kernels: a block of 32 x 8 threads owns kPrmTileP = 64 pixels of one image and loops over all
// channels. The mapping follows the layout so that a warp's loads are contiguous:
//   NCHW: lane = pixel (2 pixels per thread: lane, lane + 32), threadIdx.y = channel group (c = y, y + 8, ...);
//   NHWC: lane = channel (c = lane, lane + 32, ...), threadIdx.y = pixel row (8 pixels: y, y + 8, ..., y + 56).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda_launch.cuh"
#include "common/cuda_math.cuh"

#include "prm_gate/prm_gate_cuda.h"

namespace rsn_fast {
namespace {

constexpr int kTile = kPrmTileP;
constexpr int kThreads = 256;

using cuda_math::from_f;
using cuda_math::to_f;

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

using cuda_math::warp_sum;

template <bool CL>
struct Map {
  static constexpr int kPix = CL ? 8 : 2;     // pixels per thread
  static constexpr int kCStep = CL ? 32 : 8;  // channel stride of the block's channel loop
  __device__ static int pix(int r) { return CL ? threadIdx.y + 8 * r : threadIdx.x + 32 * r; }
  __device__ static int chan(int cb) { return cb + (CL ? threadIdx.x : threadIdx.y); }
};

template <bool CL>
__device__ __forceinline__ int64_t offset(int64_t n, int c, int64_t px, int C, int64_t HW) {
  return CL ? (n * HW + px) * C + c : (n * C + c) * HW + px;
}

// v[i]: this thread's partial for its current channel. Sums over the threads sharing that channel; returns true
// on the one thread per channel that then holds the totals in v. All threads of the block must call it.
template <bool CL, int NV>
__device__ __forceinline__ bool channel_total(float (&v)[NV], float (*red)[8][32]) {
  if constexpr (!CL) {  // the channel's threads are one warp
#pragma unroll
    for (int i = 0; i < NV; ++i) v[i] = warp_sum(v[i]);
    return threadIdx.x == 0;
  } else {
#pragma unroll
    for (int i = 0; i < NV; ++i) red[i][threadIdx.y][threadIdx.x] = v[i];
    __syncthreads();
    const bool lead = threadIdx.y == 0;
    if (lead) {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        float s = 0.f;
        for (int q = 0; q < 8; ++q) s += red[i][q][threadIdx.x];
        v[i] = s;
      }
    }
    __syncthreads();  // red is reused by the next call
    return lead;
  }
}

// acc[r]: this thread's partial for pixel Map::pix(r) over its channels. Writes the per-pixel totals to
// out[kTile] (shared); red: shared scratch of 8 * kTile floats. All threads call it; out is ready on return.
template <bool CL, int NP>
__device__ __forceinline__ void pixel_total(const float (&acc)[NP], float* red, float* out) {
  if constexpr (CL) {  // a pixel's threads are one warp (lanes = channels)
#pragma unroll
    for (int r = 0; r < NP; ++r) {
      const float s = warp_sum(acc[r]);
      if (threadIdx.x == 0) out[threadIdx.y + 8 * r] = s;
    }
  } else {
#pragma unroll
    for (int r = 0; r < NP; ++r) red[threadIdx.y * kTile + threadIdx.x + 32 * r] = acc[r];
    __syncthreads();
    if (threadIdx.y == 0) {
#pragma unroll
      for (int r = 0; r < NP; ++r) {
        float s = 0.f;
        for (int q = 0; q < 8; ++q) s += red[q * kTile + threadIdx.x + 32 * r];
        out[threadIdx.x + 32 * r] = s;
      }
    }
  }
  __syncthreads();
}

template <bool CL>
__device__ __forceinline__ void decompose(int64_t i, int C, int64_t HW, int64_t& n, int& c, int64_t& px) {
  if constexpr (CL) {
    c = static_cast<int>(i % C);
    const int64_t q = i / C;
    px = q % HW;
    n = q / HW;
  } else {
    px = i % HW;
    const int64_t q = i / HW;
    c = static_cast<int>(q % C);
    n = q / C;
  }
}

// ---- forward ----

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) pointwise_kernel(
    const T* __restrict__ z,         // (N, C, H, W) depthwise output
    const float* __restrict__ ss,    // (2, C) BN_d folded [scale; shift]
    const float* __restrict__ wp,    // (C,) pointwise weight
    float* __restrict__ p,           // (N, HW) out
    float* __restrict__ part,        // (N * tiles, 2) out
    int C, int64_t HW) {
  using M = Map<CL>;
  __shared__ float red[8 * kTile];
  __shared__ float tot[kTile];
  const int64_t n = blockIdx.y, p0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc[M::kPix];
#pragma unroll
  for (int r = 0; r < M::kPix; ++r) acc[r] = 0.f;
  for (int cb = 0; cb < C; cb += M::kCStep) {
    const int c = M::chan(cb);
    if (c >= C) continue;
    const float sc = ss[c], sh = ss[C + c], w = wp[c];
#pragma unroll
    for (int r = 0; r < M::kPix; ++r) {
      const int64_t px = p0 + M::pix(r);
      if (px < HW) acc[r] = fmaf(w, fmaxf(fmaf(to_f(z[offset<CL>(n, c, px, C, HW)]), sc, sh), 0.f), acc[r]);
    }
  }
  pixel_total<CL>(acc, red, tot);
  if (threadIdx.y == 0) {
    float s = 0.f, s2 = 0.f;
    for (int j = threadIdx.x; j < kTile; j += 32) {
      const int64_t px = p0 + j;
      if (px < HW) {
        const float v = tot[j];
        p[n * HW + px] = v;
        s += v;
        s2 += v * v;
      }
    }
    s = warp_sum(s);
    s2 = warp_sum(s2);
    if (threadIdx.x == 0) {
      const int64_t slot = n * gridDim.x + blockIdx.x;
      part[2 * slot] = s;
      part[2 * slot + 1] = s2;
    }
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) gate_kernel(
    const float* __restrict__ p,    // (N, HW)
    const float* __restrict__ bnp,  // (2,) BN_p folded [scale, shift]
    const T* __restrict__ o1,       // (N, C, H, W)
    const T* __restrict__ o2,       // (N, C)
    T* __restrict__ out,            // (N, C, H, W)
    int C, int64_t HW, int64_t total) {
  const float sc = bnp[0], sh = bnp[1];
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, px;
    int c;
    decompose<CL>(i, C, HW, n, c, px);
    const float beta = sigmoid(fmaxf(fmaf(p[n * HW + px], sc, sh), 0.f));
    out[i] = from_f<T>(to_f(o1[i]) * (1.f + to_f(o2[n * C + c]) * beta));
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) gate_eval_kernel(
    const T* __restrict__ u,            // (N, C, H, W) input of the depthwise conv
    const float* __restrict__ wf,       // (C, K*K) depthwise weight * BN_d scale
    const float* __restrict__ shift_d,  // (C,) BN_d folded shift
    const float* __restrict__ wp,       // (C,) pointwise weight
    const float* __restrict__ bnp,      // (2,) BN_p folded [scale, shift]
    const T* __restrict__ o1,           // (N, C, H, W)
    const T* __restrict__ o2,           // (N, C)
    T* __restrict__ out,                // (N, C, H, W)
    int C, int H, int W, int K, int pad) {
  using M = Map<CL>;
  __shared__ float red[8 * kTile];
  __shared__ float tot[kTile];
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t n = blockIdx.y, p0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc[M::kPix];
#pragma unroll
  for (int r = 0; r < M::kPix; ++r) acc[r] = 0.f;
  for (int cb = 0; cb < C; cb += M::kCStep) {
    const int c = M::chan(cb);
    if (c >= C) continue;
    const float* wc = wf + static_cast<int64_t>(c) * K * K;
    const float sh = shift_d[c], w = wp[c];
#pragma unroll
    for (int r = 0; r < M::kPix; ++r) {
      const int64_t px = p0 + M::pix(r);
      if (px >= HW) continue;
      const int oh = static_cast<int>(px / W), ow = static_cast<int>(px % W);
      float zv = 0.f;
      for (int i = 0; i < K; ++i) {
        const int ih = oh + i - pad;
        if (ih < 0 || ih >= H) continue;
        for (int j = 0; j < K; ++j) {
          const int iw = ow + j - pad;
          if (iw < 0 || iw >= W) continue;
          zv = fmaf(to_f(u[offset<CL>(n, c, static_cast<int64_t>(ih) * W + iw, C, HW)]), wc[i * K + j], zv);
        }
      }
      acc[r] = fmaf(w, fmaxf(zv + sh, 0.f), acc[r]);
    }
  }
  pixel_total<CL>(acc, red, tot);
  const float sc = bnp[0], shp = bnp[1];
  float beta[M::kPix];
#pragma unroll
  for (int r = 0; r < M::kPix; ++r) beta[r] = sigmoid(fmaxf(fmaf(tot[M::pix(r)], sc, shp), 0.f));
  for (int cb = 0; cb < C; cb += M::kCStep) {
    const int c = M::chan(cb);
    if (c >= C) continue;
    const float o2c = to_f(o2[n * C + c]);
#pragma unroll
    for (int r = 0; r < M::kPix; ++r) {
      const int64_t px = p0 + M::pix(r);
      if (px >= HW) continue;
      const int64_t idx = offset<CL>(n, c, px, C, HW);
      out[idx] = from_f<T>(to_f(o1[idx]) * (1.f + o2c * beta[r]));
    }
  }
}

// ---- backward ----

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) gate_bwd_kernel(
    const T* __restrict__ g,         // (N, C, H, W) upstream gradient
    const T* __restrict__ o1,        // (N, C, H, W)
    const T* __restrict__ o2,        // (N, C)
    const float* __restrict__ p,     // (N, HW) pointwise output
    const float* __restrict__ bnp4,  // (4,) [scale, shift, mean_p, rstd_p] of BN_p
    T* __restrict__ do1,             // (N, C, H, W) out
    float* __restrict__ do2_part,    // (N, tiles, C) out
    float* __restrict__ dq,          // (N, HW) out
    float* __restrict__ part,        // (N * tiles, 2) out
    int C, int64_t HW) {
  using M = Map<CL>;
  __shared__ float red[8 * kTile];
  __shared__ float cred[1][8][32];
  __shared__ float tot[kTile];
  const int64_t n = blockIdx.y, p0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t slot = n * gridDim.x + blockIdx.x;
  const float sc = bnp4[0], sh = bnp4[1];
  float beta[M::kPix], dbeta[M::kPix];
#pragma unroll
  for (int r = 0; r < M::kPix; ++r) {
    const int64_t px = p0 + M::pix(r);
    beta[r] = px < HW ? sigmoid(fmaxf(fmaf(p[n * HW + px], sc, sh), 0.f)) : 0.f;
    dbeta[r] = 0.f;
  }
  for (int cb = 0; cb < C; cb += M::kCStep) {
    const int c = M::chan(cb);
    const bool valid_c = c < C;
    float s[1] = {0.f};
    if (valid_c) {
      const float o2c = to_f(o2[n * C + c]);
#pragma unroll
      for (int r = 0; r < M::kPix; ++r) {
        const int64_t px = p0 + M::pix(r);
        if (px >= HW) continue;
        const int64_t idx = offset<CL>(n, c, px, C, HW);
        const float gv = to_f(g[idx]);
        do1[idx] = from_f<T>(gv * (1.f + o2c * beta[r]));
        const float go1 = gv * to_f(o1[idx]);
        dbeta[r] = fmaf(go1, o2c, dbeta[r]);
        s[0] = fmaf(go1, beta[r], s[0]);
      }
    }
    if (channel_total<CL>(s, cred) && valid_c) do2_part[slot * C + c] = s[0];
  }
  pixel_total<CL>(dbeta, red, tot);
  if (threadIdx.y == 0) {
    const float mean_p = bnp4[2], rstd_p = bnp4[3];
    float s = 0.f, s2 = 0.f;
    for (int j = threadIdx.x; j < kTile; j += 32) {
      const int64_t px = p0 + j;
      if (px >= HW) continue;
      const float pv = p[n * HW + px];
      const float q = fmaf(pv, sc, sh);
      const float b = sigmoid(fmaxf(q, 0.f));
      const float d = q > 0.f ? tot[j] * b * (1.f - b) : 0.f;
      dq[n * HW + px] = d;
      s += d;
      s2 += d * (pv - mean_p) * rstd_p;
    }
    s = warp_sum(s);
    s2 = warp_sum(s2);
    if (threadIdx.x == 0) {
      part[2 * slot] = s;
      part[2 * slot + 1] = s2;
    }
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) bn_d_bwd_sums_kernel(
    const T* __restrict__ z,        // (N, C, H, W) depthwise output
    const float* __restrict__ dp,   // (N, HW) gradient at the pointwise output
    const float* __restrict__ cv,   // (6, C), see the header
    const float* __restrict__ wp,   // (C,)
    float* __restrict__ part,       // (N * tiles, 3, C) out
    int C, int64_t HW) {
  using M = Map<CL>;
  __shared__ float cred[3][8][32];
  __shared__ float dps[kTile];
  const int64_t n = blockIdx.y, p0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int tid = threadIdx.y * 32 + threadIdx.x;
  if (tid < kTile) dps[tid] = p0 + tid < HW ? dp[n * HW + p0 + tid] : 0.f;
  __syncthreads();
  const int64_t slot = n * gridDim.x + blockIdx.x;
  for (int cb = 0; cb < C; cb += M::kCStep) {
    const int c = M::chan(cb);
    const bool valid_c = c < C;
    float v[3] = {0.f, 0.f, 0.f};
    if (valid_c) {
      const float mean = cv[c], rstd = cv[C + c], gamma = cv[2 * C + c], beta = cv[3 * C + c], w = wp[c];
#pragma unroll
      for (int r = 0; r < M::kPix; ++r) {
        const int64_t px = p0 + M::pix(r);
        if (px >= HW) continue;
        const float zh = (to_f(z[offset<CL>(n, c, px, C, HW)]) - mean) * rstd;
        const float y = fmaf(zh, gamma, beta);
        if (y > 0.f) {
          const float d = dps[M::pix(r)];
          const float dr = d * w;
          v[0] = fmaf(d, y, v[0]);
          v[1] += dr;
          v[2] = fmaf(dr, zh, v[2]);
        }
      }
    }
    if (channel_total<CL>(v, cred) && valid_c) {
      part[slot * 3 * C + c] = v[0];
      part[slot * 3 * C + C + c] = v[1];
      part[slot * 3 * C + 2 * C + c] = v[2];
    }
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) bn_d_bwd_kernel(
    const T* __restrict__ z,       // (N, C, H, W)
    const float* __restrict__ dp,  // (N, HW)
    const float* __restrict__ cv,  // (6, C)
    const float* __restrict__ wp,  // (C,)
    T* __restrict__ dz,            // (N, C, H, W) out
    int C, int64_t HW, int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, px;
    int c;
    decompose<CL>(i, C, HW, n, c, px);
    const float rstd = cv[C + c], gamma = cv[2 * C + c];
    const float zh = (to_f(z[i]) - cv[c]) * rstd;
    const float y = fmaf(zh, gamma, cv[3 * C + c]);
    const float dr = y > 0.f ? dp[n * HW + px] * wp[c] : 0.f;
    dz[i] = from_f<T>(gamma * rstd * (dr - cv[4 * C + c] - zh * cv[5 * C + c]));
  }
}

// ---- launchers ----

dim3 tile_grid(int64_t n, int64_t hw) {
  return dim3(static_cast<unsigned>(prm_gate_tiles(hw)), static_cast<unsigned>(n));
}

unsigned flat_blocks(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (1 << 20) ? (b < 1 ? 1 : b) : (1 << 20));  // grid-stride beyond that
}

const dim3 kBlock(32, 8);

// Calls F<T, CL>::run(args...) for the runtime dtype and layout.
template <template <typename, bool> class F, typename... Args>
cudaError_t dispatch(DType dtype, bool cl, Args... args) {
  switch (dtype) {
    case DType::kFloat32:
      return cl ? F<float, true>::run(args...) : F<float, false>::run(args...);
    case DType::kFloat16:
      return cl ? F<__half, true>::run(args...) : F<__half, false>::run(args...);
    case DType::kBFloat16:
      return cl ? F<__nv_bfloat16, true>::run(args...) : F<__nv_bfloat16, false>::run(args...);
  }
  return cudaErrorInvalidValue;
}

template <typename T, bool CL>
struct Pointwise {
  static cudaError_t run(const void* z, const float* ss, const float* pw, float* p, float* part, int64_t n,
                         int64_t c, int64_t hw, cudaStream_t s) {
    RSN_LAUNCH(tile_grid(n, hw), kBlock, 0, s, pointwise_kernel<T, CL>)(static_cast<const T*>(z), ss, pw, p, part,
                                                                 static_cast<int>(c), hw);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct Gate {
  static cudaError_t run(const float* p, const float* bnp, const void* o1, const void* o2, void* out, int64_t n,
                         int64_t c, int64_t hw, cudaStream_t s) {
    const int64_t total = n * c * hw;
    RSN_LAUNCH(flat_blocks(total), kThreads, 0, s, gate_kernel<T, CL>)(p, bnp, static_cast<const T*>(o1),
                                                                static_cast<const T*>(o2), static_cast<T*>(out),
                                                                static_cast<int>(c), hw, total);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct GateEval {
  static cudaError_t run(const void* u, const float* wf, const float* shift_d, const float* pw, const float* bnp,
                         const void* o1, const void* o2, void* out, int64_t n, int64_t c, int64_t h, int64_t w,
                         int k, cudaStream_t s) {
    RSN_LAUNCH(tile_grid(n, h * w), kBlock, 0, s, gate_eval_kernel<T, CL>)(
        static_cast<const T*>(u), wf, shift_d, pw, bnp, static_cast<const T*>(o1), static_cast<const T*>(o2),
        static_cast<T*>(out), static_cast<int>(c), static_cast<int>(h), static_cast<int>(w), k, k / 2);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct GateBwd {
  static cudaError_t run(const void* g, const void* o1, const void* o2, const float* p, const float* bnp4,
                         void* do1, float* do2_part, float* dq, float* part, int64_t n, int64_t c, int64_t hw,
                         cudaStream_t s) {
    RSN_LAUNCH(tile_grid(n, hw), kBlock, 0, s, gate_bwd_kernel<T, CL>)(
        static_cast<const T*>(g), static_cast<const T*>(o1), static_cast<const T*>(o2), p, bnp4,
        static_cast<T*>(do1), do2_part, dq, part, static_cast<int>(c), hw);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct BnDBwdSums {
  static cudaError_t run(const void* z, const float* dp, const float* cv, const float* pw, float* part, int64_t n,
                         int64_t c, int64_t hw, cudaStream_t s) {
    RSN_LAUNCH(tile_grid(n, hw), kBlock, 0, s, bn_d_bwd_sums_kernel<T, CL>)(static_cast<const T*>(z), dp, cv, pw, part,
                                                                     static_cast<int>(c), hw);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct BnDBwd {
  static cudaError_t run(const void* z, const float* dp, const float* cv, const float* pw, void* dz, int64_t n,
                         int64_t c, int64_t hw, cudaStream_t s) {
    const int64_t total = n * c * hw;
    RSN_LAUNCH(flat_blocks(total), kThreads, 0, s, bn_d_bwd_kernel<T, CL>)(
        static_cast<const T*>(z), dp, cv, pw, static_cast<T*>(dz), static_cast<int>(c), hw, total);
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t launch_prm_pointwise(const void* z, const float* ss, const float* pw, float* p, float* part, int64_t n,
                                 int64_t c, int64_t hw, bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<Pointwise>(dtype, channels_last, z, ss, pw, p, part, n, c, hw, stream);
}

cudaError_t launch_prm_gate(const float* p, const float* bnp, const void* o1, const void* o2, void* out, int64_t n,
                            int64_t c, int64_t hw, bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<Gate>(dtype, channels_last, p, bnp, o1, o2, out, n, c, hw, stream);
}

cudaError_t launch_prm_gate_eval(const void* u, const float* wf, const float* shift_d, const float* pw,
                                 const float* bnp, const void* o1, const void* o2, void* out, int64_t n, int64_t c,
                                 int64_t h, int64_t w, int k, bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<GateEval>(dtype, channels_last, u, wf, shift_d, pw, bnp, o1, o2, out, n, c, h, w, k, stream);
}

cudaError_t launch_prm_gate_bwd(const void* g, const void* o1, const void* o2, const float* p, const float* bnp4,
                                void* do1, float* do2_part, float* dq, float* part, int64_t n, int64_t c,
                                int64_t hw, bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<GateBwd>(dtype, channels_last, g, o1, o2, p, bnp4, do1, do2_part, dq, part, n, c, hw, stream);
}

cudaError_t launch_prm_bn_d_bwd_sums(const void* z, const float* dp, const float* cv, const float* pw, float* part,
                                     int64_t n, int64_t c, int64_t hw, bool channels_last, DType dtype,
                                     cudaStream_t stream) {
  return dispatch<BnDBwdSums>(dtype, channels_last, z, dp, cv, pw, part, n, c, hw, stream);
}

cudaError_t launch_prm_bn_d_bwd(const void* z, const float* dp, const float* cv, const float* pw, void* dz,
                                int64_t n, int64_t c, int64_t hw, bool channels_last, DType dtype,
                                cudaStream_t stream) {
  return dispatch<BnDBwd>(dtype, channels_last, z, dp, cv, pw, dz, n, c, hw, stream);
}

}  // namespace rsn_fast
