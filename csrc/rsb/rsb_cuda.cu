// Fused RSB elementwise / statistics CUDA kernels (no torch headers: see rsb_cuda.h). sm_70-clean: half and
// bfloat16 are only converted with __half2float/__float2half_rn and __bfloat162float/__float2bfloat16_rn (every
// arch); all arithmetic is float32; reductions are fixed-order (warp butterflies, shared-memory loops), no atomics.
//
// Per-channel passes ("channel_pass_kernel") give every thread one fixed channel, so per-channel sums stay in
// registers until one block reduction at the end:
//   NCHW: block (c, n) walks the H*W pixels of plane (n, c), 256 threads consecutive along the pixels;
//   NHWC: block (tile, chunk) walks kRsbTileRows pixels x 32 channels; lane = channel (a warp reads 32
//         consecutive channels of one pixel), threadIdx.y = pixel row.
// Pure elementwise kernels use a grid-stride loop over the dense output.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda_launch.cuh"
#include "common/cuda_math.cuh"

#include "rsb/rsb_cuda.h"

namespace rsn_fast {
namespace {

constexpr int kThreads = 256;

using cuda_math::from_f;
using cuda_math::to_f;

using cuda_math::warp_sum;

// Channel of dense element i.
template <bool CL>
__device__ __forceinline__ int channel_of(int64_t i, int64_t C, int64_t HW) {
  return static_cast<int>(CL ? i % C : (i / HW) % C);
}

template <typename T>
__device__ __forceinline__ float load_src(const RsbSources& s, int k, int64_t n, int64_t c, int64_t h, int64_t w) {
  const T* p = static_cast<const T*>(s.ptr[k]);
  return to_f(p[n * s.stride[k][0] + c * s.stride[k][1] + h * s.stride[k][2] + w * s.stride[k][3]]);
}

int blocks_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<int>(b < (int64_t{1} << 30) ? (b > 0 ? b : 1) : (int64_t{1} << 30));
}

// ---- the per-channel pass driver ----

// Calls op(offset, n, pix, c, acc) for every element of this block's (channel, pixel range) of a dense
// (N, C, H, W) map and writes the block's acc totals to part[(slot * NV + i) * C + c].
template <bool CL, int NV, typename Op>
__global__ void __launch_bounds__(kThreads) channel_pass_kernel(Op op, float* __restrict__ part, int C, int64_t HW,
                                                                int64_t M) {
  __shared__ float red[NV][8][32];
  float acc[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) acc[i] = 0.f;
  const int lane = threadIdx.x, row = threadIdx.y;
  if constexpr (!CL) {
    const int c = blockIdx.x;
    const int64_t n = blockIdx.y;
    const int64_t base = (n * C + c) * HW;
    for (int64_t px = row * 32 + lane; px < HW; px += kThreads) op(base + px, n, px, c, acc);
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const float v = warp_sum(acc[i]);
      if (lane == 0) red[i][row][0] = v;
    }
    __syncthreads();
    if (row == 0 && lane < NV) {
      float s = 0.f;
      for (int q = 0; q < 8; ++q) s += red[lane][q][0];
      part[(n * NV + lane) * C + c] = s;
    }
  } else {
    const int c = blockIdx.y * 32 + lane;
    const bool active = c < C;
    const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRsbTileRows;
    if (active) {
      for (int j = row; j < kRsbTileRows; j += 8) {
        const int64_t r = r0 + j;
        if (r < M) op(r * C + c, r / HW, r % HW, c, acc);
      }
    }
#pragma unroll
    for (int i = 0; i < NV; ++i) red[i][row][lane] = acc[i];
    __syncthreads();
    if (row == 0 && active) {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        float s = 0.f;
        for (int q = 0; q < 8; ++q) s += red[i][q][lane];
        part[(static_cast<int64_t>(blockIdx.x) * NV + i) * C + c] = s;
      }
    }
  }
}

template <bool CL, int NV, typename Op>
cudaError_t run_channel_pass(const Op& op, float* part, int64_t n, int64_t c, int64_t hw, cudaStream_t stream) {
  if (n * c * hw == 0) return cudaSuccess;
  const dim3 block(32, 8);
  dim3 grid;
  if (CL) {
    grid = dim3(static_cast<unsigned>(rsb_slots(n, hw, true)), static_cast<unsigned>((c + 31) / 32));
  } else {
    grid = dim3(static_cast<unsigned>(c), static_cast<unsigned>(n));
  }
  RSN_LAUNCH(grid, block, 0, stream, channel_pass_kernel<CL, NV, Op>)(op, part, static_cast<int>(c), hw, n * hw);
  return cudaGetLastError();
}

// ---- ops of the channel passes ----

template <typename T>
struct StatsOp {
  const T* z;
  __device__ void operator()(int64_t off, int64_t, int64_t, int, float (&acc)[2]) const {
    const float v = to_f(z[off]);
    acc[0] += v;
    acc[1] = fmaf(v, v, acc[1]);
  }
};

template <typename T>
struct EpilogueBwdOp {
  const T *grad, *out, *z, *r;
  const float *a, *ra;
  T *dz, *dr;
  __device__ void operator()(int64_t off, int64_t, int64_t, int c, float (&acc)[3]) const {
    const float m = to_f(out[off]) > 0.f ? to_f(grad[off]) : 0.f;
    dz[off] = from_f<T>(m * a[c]);
    dr[off] = from_f<T>(ra != nullptr ? m * ra[c] : m);
    acc[0] = fmaf(m, to_f(z[off]), acc[0]);
    acc[1] += m;
    acc[2] = fmaf(m, to_f(r[off]), acc[2]);
  }
};

// The ReLU mask / affine / fan-out of one source element; returns d for the source, adds to the sums.
__device__ __forceinline__ float source_grad(float g, float v, const float* scale, const float* shift, int64_t ci,
                                             bool relu, float& dsc, float& dsh) {
  float d = g;
  if (scale != nullptr) {
    const float a = scale[ci];
    if (relu && fmaf(v, a, shift[ci]) <= 0.f) d = 0.f;
    dsc = fmaf(d, v, dsc);
    dsh += d;
    return d * a;
  }
  if (relu && v <= 0.f) d = 0.f;
  return d;
}

template <typename T, bool CL>
struct PrologueBwdSumOp {
  const T* du;
  RsbSources srcs;
  const float *scale, *shift;
  T* dsrc[kRsbMaxSrc];
  int64_t c_src, w;
  bool relu;
  __device__ void operator()(int64_t off, int64_t n, int64_t px, int c, float (&acc)[2 * kRsbMaxSrc]) const {
    const float g = to_f(du[off]);
    const int64_t h = px / w, x = px % w;
#pragma unroll
    for (int k = 0; k < kRsbMaxSrc; ++k) {
      if (k < srcs.count) {
        const float v = load_src<T>(srcs, k, n, c, h, x);
        dsrc[k][off] = from_f<T>(source_grad(g, v, scale, shift, k * c_src + c, relu, acc[2 * k], acc[2 * k + 1]));
      }
    }
  }
};

template <typename T, bool CL>
struct PrologueBwdCatOp {
  const T* du;
  RsbSources srcs;
  const float *scale, *shift;
  T* dsrc[kRsbMaxSrc];
  int64_t c_src, w, hw;
  bool relu;
  __device__ void operator()(int64_t off, int64_t n, int64_t px, int c, float (&acc)[2]) const {
    const int k = static_cast<int>(c / c_src);
    const int64_t cs = c % c_src;
    const float v = load_src<T>(srcs, k, n, cs, px / w, px % w);
    const int64_t so = CL ? (n * hw + px) * c_src + cs : (n * c_src + cs) * hw + px;
    dsrc[k][so] = from_f<T>(source_grad(to_f(du[off]), v, scale, shift, c, relu, acc[0], acc[1]));
  }
};

// ---- elementwise kernels ----

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) prologue_kernel(RsbSources srcs, const float* __restrict__ scale,
                                                            const float* __restrict__ shift, bool relu, bool cat,
                                                            T* __restrict__ u, int64_t c_src, int64_t H, int64_t W,
                                                            int64_t total) {
  const int64_t cu = cat ? c_src * srcs.count : c_src, HW = H * W;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, c, px;
    if (CL) {
      c = i % cu;
      const int64_t q = i / cu;
      px = q % HW;
      n = q / HW;
    } else {
      px = i % HW;
      const int64_t q = i / HW;
      c = q % cu;
      n = q / cu;
    }
    const int64_t h = px / W, x = px % W;
    float s = 0.f;
    if (cat) {
      const int k = static_cast<int>(c / c_src);
      float v = load_src<T>(srcs, k, n, c % c_src, h, x);
      if (scale != nullptr) v = fmaf(v, scale[c], shift[c]);
      s = relu ? fmaxf(v, 0.f) : v;
    } else {
#pragma unroll
      for (int k = 0; k < kRsbMaxSrc; ++k) {
        if (k < srcs.count) {
          float v = load_src<T>(srcs, k, n, c, h, x);
          if (scale != nullptr) v = fmaf(v, scale[k * c_src + c], shift[k * c_src + c]);
          s += relu ? fmaxf(v, 0.f) : v;
        }
      }
    }
    u[i] = from_f<T>(s);
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) grad_fold_kernel(const T* __restrict__ gz, const float* __restrict__ gs,
                                                             const float* __restrict__ gq, const T* __restrict__ z,
                                                             T* __restrict__ g, int64_t C, int64_t HW,
                                                             int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = channel_of<CL>(i, C, HW);
    float v = gz != nullptr ? to_f(gz[i]) : 0.f;
    if (gs != nullptr) v += gs[c];
    if (gq != nullptr) v += 2.f * to_f(z[i]) * gq[c];
    g[i] = from_f<T>(v);
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads) epilogue_kernel(const T* __restrict__ z, const float* __restrict__ a,
                                                            const float* __restrict__ b, const T* __restrict__ r,
                                                            const float* __restrict__ ra,
                                                            const float* __restrict__ rb, T* __restrict__ out,
                                                            int64_t C, int64_t HW, int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = channel_of<CL>(i, C, HW);
    const float rv = ra != nullptr ? fmaf(to_f(r[i]), ra[c], rb[c]) : to_f(r[i]);
    out[i] = from_f<T>(fmaxf(fmaf(to_f(z[i]), a[c], b[c]) + rv, 0.f));
  }
}

// ---- dtype / layout dispatch ----

template <template <typename, bool> class Fn, typename... Args>
cudaError_t dispatch(DType dtype, bool channels_last, Args... args) {
  switch (dtype) {
    case DType::kFloat32:
      return channels_last ? Fn<float, true>::run(args...) : Fn<float, false>::run(args...);
    case DType::kFloat16:
      return channels_last ? Fn<__half, true>::run(args...) : Fn<__half, false>::run(args...);
    case DType::kBFloat16:
      return channels_last ? Fn<__nv_bfloat16, true>::run(args...) : Fn<__nv_bfloat16, false>::run(args...);
  }
  return cudaErrorInvalidValue;
}

template <typename T, bool CL>
struct Prologue {
  static cudaError_t run(const RsbSources& srcs, const float* scale, const float* shift, bool relu, bool cat,
                         void* u, int64_t n, int64_t c_src, int64_t h, int64_t w, cudaStream_t stream) {
    const int64_t total = n * (cat ? c_src * srcs.count : c_src) * h * w;
    if (total == 0) return cudaSuccess;
    RSN_LAUNCH(blocks_for(total), kThreads, 0, stream, prologue_kernel<T, CL>)(srcs, scale, shift, relu, cat,
                                                                       static_cast<T*>(u), c_src, h, w, total);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct Stats {
  static cudaError_t run(const void* z, float* part, int64_t n, int64_t c, int64_t hw, cudaStream_t stream) {
    return run_channel_pass<CL, 2>(StatsOp<T>{static_cast<const T*>(z)}, part, n, c, hw, stream);
  }
};

template <typename T, bool CL>
struct GradFold {
  static cudaError_t run(const void* gz, const float* gs, const float* gq, const void* z, void* g, int64_t n,
                         int64_t c, int64_t hw, cudaStream_t stream) {
    const int64_t total = n * c * hw;
    if (total == 0) return cudaSuccess;
    RSN_LAUNCH(blocks_for(total), kThreads, 0, stream, grad_fold_kernel<T, CL>)(
        static_cast<const T*>(gz), gs, gq, static_cast<const T*>(z), static_cast<T*>(g), c, hw, total);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct PrologueBwd {
  static cudaError_t run(const void* du, const RsbSources& srcs, const float* scale, const float* shift, bool relu,
                         bool cat, void* const* dsrc, float* part, int64_t n, int64_t c_src, int64_t h, int64_t w,
                         cudaStream_t stream) {
    if (cat) {
      PrologueBwdCatOp<T, CL> op{static_cast<const T*>(du), srcs, scale, shift, {}, c_src, w, h * w, relu};
      for (int k = 0; k < srcs.count; ++k) op.dsrc[k] = static_cast<T*>(dsrc[k]);
      return run_channel_pass<CL, 2>(op, part, n, c_src * srcs.count, h * w, stream);
    }
    PrologueBwdSumOp<T, CL> op{static_cast<const T*>(du), srcs, scale, shift, {}, c_src, w, relu};
    for (int k = 0; k < srcs.count; ++k) op.dsrc[k] = static_cast<T*>(dsrc[k]);
    return run_channel_pass<CL, 2 * kRsbMaxSrc>(op, part, n, c_src, h * w, stream);
  }
};

template <typename T, bool CL>
struct Epilogue {
  static cudaError_t run(const void* z, const float* a, const float* b, const void* r, const float* ra,
                         const float* rb, void* out, int64_t n, int64_t c, int64_t hw, cudaStream_t stream) {
    const int64_t total = n * c * hw;
    if (total == 0) return cudaSuccess;
    RSN_LAUNCH(blocks_for(total), kThreads, 0, stream, epilogue_kernel<T, CL>)(
        static_cast<const T*>(z), a, b, static_cast<const T*>(r), ra, rb, static_cast<T*>(out), c, hw, total);
    return cudaGetLastError();
  }
};

template <typename T, bool CL>
struct EpilogueBwd {
  static cudaError_t run(const void* grad, const void* out, const void* z, const void* r, const float* a,
                         const float* ra, void* dz, void* dr, float* part, int64_t n, int64_t c, int64_t hw,
                         cudaStream_t stream) {
    EpilogueBwdOp<T> op{static_cast<const T*>(grad), static_cast<const T*>(out), static_cast<const T*>(z),
                        static_cast<const T*>(r),    a,
                        ra,                          static_cast<T*>(dz),
                        static_cast<T*>(dr)};
    return run_channel_pass<CL, 3>(op, part, n, c, hw, stream);
  }
};

}  // namespace

cudaError_t launch_rsb_prologue(const RsbSources& srcs, const float* scale, const float* shift, bool relu, bool cat,
                                void* u, int64_t n, int64_t c_src, int64_t h, int64_t w, bool channels_last,
                                DType dtype, cudaStream_t stream) {
  return dispatch<Prologue>(dtype, channels_last, srcs, scale, shift, relu, cat, u, n, c_src, h, w, stream);
}

cudaError_t launch_rsb_channel_stats(const void* z, float* part, int64_t n, int64_t c, int64_t hw,
                                     bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<Stats>(dtype, channels_last, z, part, n, c, hw, stream);
}

cudaError_t launch_rsb_grad_fold(const void* grad_z, const float* grad_sum, const float* grad_sumsq, const void* z,
                                 void* g, int64_t n, int64_t c, int64_t hw, bool channels_last, DType dtype,
                                 cudaStream_t stream) {
  return dispatch<GradFold>(dtype, channels_last, grad_z, grad_sum, grad_sumsq, z, g, n, c, hw, stream);
}

cudaError_t launch_rsb_prologue_bwd(const void* du, const RsbSources& srcs, const float* scale, const float* shift,
                                    bool relu, bool cat, void* const* dsrc, float* part, int64_t n, int64_t c_src,
                                    int64_t h, int64_t w, bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<PrologueBwd>(dtype, channels_last, du, srcs, scale, shift, relu, cat, dsrc, part, n, c_src, h, w,
                               stream);
}

cudaError_t launch_rsb_epilogue(const void* z, const float* a, const float* b, const void* r, const float* ra,
                                const float* rb, void* out, int64_t n, int64_t c, int64_t hw, bool channels_last,
                                DType dtype, cudaStream_t stream) {
  return dispatch<Epilogue>(dtype, channels_last, z, a, b, r, ra, rb, out, n, c, hw, stream);
}

cudaError_t launch_rsb_epilogue_bwd(const void* grad, const void* out, const void* z, const void* r,
                                    const float* a, const float* ra, void* dz, void* dr, float* part, int64_t n,
                                    int64_t c, int64_t hw, bool channels_last, DType dtype, cudaStream_t stream) {
  return dispatch<EpilogueBwd>(dtype, channels_last, grad, out, z, r, a, ra, dz, dr, part, n, c, hw, stream);
}

}  // namespace rsn_fast
