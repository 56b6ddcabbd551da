// decode_heatmaps CUDA kernel: one thread block per (person, keypoint) map, no host synchronisation.
//
// The (flip-averaged) map is read from global memory (cached) as the row filter needs it; the row-filtered
// rows live in shared memory; each thread then forms its blurred cells with the column filter and keeps its
// best two under NumPy's argmax order (a NaN wins; ties go to the lower row-major index). A block reduction
// gives top-1; top-2 of the map with top-1 set to zero is then the best of every thread's best cell other than
// top-1, and a zero at top-1 (RSN step 6). Rounding follows the reference: explicit _rn intrinsics keep nvcc
// from contracting a*b+c into an FMA, so the blurred values, and hence the peaks, equal the CPU ones.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <vector>

#include "common/cuda_launch.cuh"
#include "decode_heatmaps/decode_heatmaps_cuda.h"
#include "decode_heatmaps/decode_math.h"

namespace rsn_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTaps = 64;  // blur kernels up to 63 (checked by the launcher)

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(float v) { return static_cast<acc_t>(v); }
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(double v) { return static_cast<acc_t>(v); }
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(__half v) { return static_cast<acc_t>(__half2float(v)); }
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(__nv_bfloat16 v) { return static_cast<acc_t>(__bfloat162float(v)); }

template <typename acc_t>
struct Cand {
  acc_t v;
  int64_t i;
};

// NumPy argmax order: true when a comes before b.
template <typename acc_t>
__device__ __forceinline__ bool before(const Cand<acc_t>& a, const Cand<acc_t>& b) {
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (an || bn) return an && (!bn || a.i < b.i);
  if (a.v != b.v) return a.v > b.v;
  return a.i < b.i;
}

// A thread with no cell: comes after every real cell (-inf, and the largest index on a tie with -inf).
template <typename acc_t>
__device__ __forceinline__ Cand<acc_t> idle() {
  return Cand<acc_t>{-static_cast<acc_t>(INFINITY), INT64_MAX};
}

template <typename acc_t>
__device__ Cand<acc_t> block_best(Cand<acc_t> c, Cand<acc_t>* red) {
  for (int off = 16; off > 0; off >>= 1) {
    Cand<acc_t> o;
    o.v = __shfl_down_sync(0xffffffffu, c.v, off);
    o.i = __shfl_down_sync(0xffffffffu, c.i, off);
    if (before(o, c)) c = o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from a previous call
  if (lane == 0) red[warp] = c;
  __syncthreads();
  if (warp == 0) {
    c = lane < static_cast<int>(blockDim.x / 32) ? red[lane] : red[0];
    for (int off = 16; off > 0; off >>= 1) {
      Cand<acc_t> o;
      o.v = __shfl_down_sync(0xffffffffu, c.v, off);
      o.i = __shfl_down_sync(0xffffffffu, c.i, off);
      if (before(o, c)) c = o;
    }
    if (lane == 0) red[0] = c;
  }
  __syncthreads();
  return red[0];
}

template <typename scalar_t, typename acc_t>
struct MapView {
  const scalar_t* a;  // this map of heatmaps
  const scalar_t* b;  // the matching (pair-swapped) map of flipped, or null
  int64_t w;
  __device__ acc_t operator()(int64_t y, int64_t x) const {
    const acc_t va = to_acc<acc_t>(a[y * w + x]);
    if (!b) return va;
    return mul_rn(add_rn(va, to_acc<acc_t>(b[y * w + (w - 1 - x)])), acc_t(0.5));
  }
};

template <typename scalar_t, typename acc_t>
__global__ void decode_kernel(const scalar_t* __restrict__ heatmaps,  // (N, K, H, W)
                              const scalar_t* __restrict__ flipped,   // (N, K, H, W) or null
                              const int64_t* __restrict__ perm,       // (K,) or null
                              const acc_t* __restrict__ centers,      // (N, 2)
                              const acc_t* __restrict__ boxes,        // (N, 2)
                              acc_t* __restrict__ coords,             // (N, K, 2)
                              acc_t* __restrict__ scores,             // (N, K)
                              DecodeParams p, GridPlan plan, int blur) {
  RSN_EXTERN_SHARED(unsigned char, smem_raw);
  acc_t* tmp = reinterpret_cast<acc_t*>(smem_raw);  // row-filtered rows: (out_rows + 2r) x out_cols
  __shared__ acc_t g[kMaxTaps];
  __shared__ Cand<acc_t> red[kThreads / 32];
  const int64_t item = blockIdx.x, h = p.h, w = p.w, hw = h * w;
  const int64_t ni = item / p.k, ki = item % p.k;
  MapView<scalar_t, acc_t> m{heatmaps + item * hw, flipped ? flipped + (ni * p.k + perm[ki]) * hw : nullptr, w};
  const int r = p.ksize / 2;
  if (threadIdx.x == 0) {  // cv2.getGaussianKernel(k, 0), as gaussian_kernel() on the host
    if (p.ksize <= 9) {
      const int small[5][9] = {{256}, {64, 128, 64}, {16, 64, 96, 64, 16}, {8, 28, 56, 72, 56, 28, 8},
                               {4, 13, 30, 51, 60, 51, 30, 13, 4}};
      for (int i = 0; i < p.ksize; ++i) g[i] = static_cast<acc_t>(small[p.ksize / 2][i] / 256.0);
    } else {
      const double sigma = 0.3 * ((p.ksize - 1) * 0.5 - 1) + 0.8, s2 = -0.5 / (sigma * sigma);
      double total = 0;
      for (int i = 0; i < p.ksize; ++i) total += exp(s2 * (i - (p.ksize - 1) * 0.5) * (i - (p.ksize - 1) * 0.5));
      for (int i = 0; i < p.ksize; ++i)
        g[i] = static_cast<acc_t>(exp(s2 * (i - (p.ksize - 1) * 0.5) * (i - (p.ksize - 1) * 0.5)) * (1.0 / total));
    }
  }
  __syncthreads();
  const int64_t oc = plan.c1 - plan.c0, orows = plan.r1 - plan.r0, er = orows + 2 * r;

  // Raw-map argmax (standard, dark) or max (megvii, dark: MMPose's rescale), straight from global memory.
  Cand<acc_t> raw{acc_t(0), -1};
  if (p.mode != kModeRsn) {
    Cand<acc_t> c{m(0, 0), 0};
    for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) {
      const Cand<acc_t> o{m(i / w, i % w), i};
      if (before(o, c)) c = o;
    }
    raw = block_best(c, red);
  }
  acc_t fx = 0, fy = 0, score = 0, x_in, y_in;
  bool need_blur = p.mode != kModeStandard;
  int64_t dx0 = -1, dy0 = -1;
  if (p.mode == kModeDark) {
    const bool bad = raw.v <= acc_t(0);
    dx0 = bad ? -1 : raw.i % w, dy0 = bad ? -1 : raw.i / w;
    need_blur = dark_in_bounds(dx0, dy0, w, h);
  }
  acc_t ratio = 0;
  Cand<acc_t> top1{acc_t(0), 0}, top2{acc_t(0), 0};
  auto col_filter = [&](int64_t y, int64_t c) {
    const acc_t* t0 = tmp + (y + r) * oc + c;
    acc_t acc = mul_rn(t0[0], g[r]);
    for (int j = 1; j <= r; ++j) acc = add_rn(acc, mul_rn(g[r + j], add_rn(t0[-j * oc], t0[j * oc])));
    return acc;
  };
  if (need_blur) {
    for (int64_t e = threadIdx.x; e < er * oc; e += blockDim.x) {  // row filter into shared memory
      const int64_t i = e / oc, c = e % oc;
      const int64_t mr = reflect101(plan.r0 - r + i, plan.gh) - plan.pad;
      acc_t acc = 0;
      if (mr >= 0 && mr < h) {
        auto at = [&](int64_t dc) {
          const int64_t mc = reflect101(plan.c0 + c + dc, plan.gw) - plan.pad;
          return (mc >= 0 && mc < w) ? m(mr, mc) : acc_t(0);
        };
        acc = mul_rn(at(0), g[r]);
        for (int j = 1; j <= r; ++j) acc = add_rn(acc, mul_rn(g[r + j], add_rn(at(-j), at(j))));
      }
      tmp[e] = acc;
    }
    __syncthreads();
    // Column filter: each thread keeps its best two cells (grid indices for RSN, map indices otherwise).
    Cand<acc_t> b1{acc_t(0), -1}, b2{acc_t(0), -1};
    for (int64_t e = threadIdx.x; e < orows * oc; e += blockDim.x) {
      const int64_t y = e / oc, c = e % oc;
      const Cand<acc_t> o{col_filter(y, c), p.mode == kModeRsn ? (plan.r0 + y) * plan.gw + plan.c0 + c : e};
      if (b1.i < 0 || before(o, b1)) {
        b2 = b1;
        b1 = o;
      } else if (b2.i < 0 || before(o, b2)) {
        b2 = o;
      }
    }
    if (b1.i < 0) b1 = idle<acc_t>();
    if (b2.i < 0) b2 = idle<acc_t>();
    if (p.mode == kModeRsn) {
      Cand<acc_t> c1 = b1;
      if (plan.zero_outside && threadIdx.x == 0) {
        const Cand<acc_t> z{acc_t(0), plan.first_zero};
        if (before(z, c1)) c1 = z;
      }
      top1 = block_best(c1, red);
      Cand<acc_t> c2 = b1.i == top1.i ? b2 : b1;
      if (threadIdx.x == 0) {
        const Cand<acc_t> z{acc_t(0), top1.i};  // top-1 set to zero
        if (before(z, c2)) c2 = z;
        if (plan.zero_outside) {
          const Cand<acc_t> z0{acc_t(0), plan.first_zero};
          if (z0.i != top1.i && before(z0, c2)) c2 = z0;
        }
      }
      top2 = block_best(c2, red);
    } else {
      const acc_t bmax = block_best(b1, red).v;
      ratio = raw.v / bmax;  // MMPose gaussian_blur: times (map max / blur max); NaN for an all-zero map
    }
  }
  if (threadIdx.x == 0 && p.mode == kModeRsn) {
    const RsnPeak<acc_t> pk =
        rsn_offset<acc_t>(top1.i % plan.gw, top1.i / plan.gw, top2.i % plan.gw, top2.i / plan.gw, kRsnBorder, w, h);
    const int64_t sx = static_cast<int64_t>(rint(pk.x)), sy = static_cast<int64_t>(rint(pk.y));
    score = m(sy, sx) / acc_t(255) + acc_t(0.5);
    x_in = add_rn(mul_rn(pk.x, static_cast<acc_t>(p.in_w / w)), static_cast<acc_t>(p.in_w / w / 2));
    y_in = add_rn(mul_rn(pk.y, static_cast<acc_t>(p.in_h / h)), static_cast<acc_t>(p.in_h / h / 2));
  }
  if (p.mode == kModeMegvii) {  // argmax of the rescaled blur (rescaling can create ties: recompute)
    Cand<acc_t> c = idle<acc_t>();
    for (int64_t e = threadIdx.x; e < hw; e += blockDim.x) {
      const Cand<acc_t> o{mul_rn(col_filter(e / w, e % w), ratio), e};
      if (before(o, c)) c = o;
    }
    const Cand<acc_t> best = block_best(c, red);
    if (threadIdx.x == 0) {
      acc_t nb[9];  // 3x3 neighbourhood of the rescaled blur, clamped like the reference's picks
      const bool bad = best.v <= acc_t(0);
      const int64_t x = bad ? -1 : best.i % w, y = bad ? -1 : best.i / w;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const int64_t yy = min(max(y + dy, int64_t(0)), h - 1), xx = min(max(x + dx, int64_t(0)), w - 1);
          nb[(dy + 1) * 3 + dx + 1] = mul_rn(col_filter(yy, xx), ratio);
        }
      const bool inner = x > 1 && x < w - 1 && y > 1 && y < h - 1;
      const acc_t gx = nb[5] - nb[3], gy = nb[7] - nb[1];
      fx = static_cast<acc_t>(x) + (inner ? add_rn(mul_rn(sign_of(gx), acc_t(0.25)), acc_t(0.5)) : acc_t(0));
      fy = static_cast<acc_t>(y) + (inner ? add_rn(mul_rn(sign_of(gy), acc_t(0.25)), acc_t(0.5)) : acc_t(0));
      score = best.v / acc_t(255) + acc_t(0.5);
    }
  } else if (threadIdx.x == 0 && p.mode == kModeStandard) {
    acc_t nb[9];
    const bool bad = raw.v <= acc_t(0);
    const int64_t x = bad ? -1 : raw.i % w, y = bad ? -1 : raw.i / w;
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx)
        nb[(dy + 1) * 3 + dx + 1] = m(min(max(y + dy, int64_t(0)), h - 1), min(max(x + dx, int64_t(0)), w - 1));
    const bool okx = x > 1 && x < w - 1 && y > 0 && y < h;  // MMPose refine_keypoints bounds
    const bool oky = y > 1 && y < h - 1 && x > 0 && x < w;
    fx = static_cast<acc_t>(x) + (okx ? sign_of(nb[5] - nb[3]) : acc_t(0)) * acc_t(0.25);
    fy = static_cast<acc_t>(y) + (oky ? sign_of(nb[7] - nb[1]) : acc_t(0)) * acc_t(0.25);
    score = raw.v;
  } else if (threadIdx.x == 0 && p.mode == kModeDark) {
    fx = static_cast<acc_t>(dx0), fy = static_cast<acc_t>(dy0);
    if (need_blur) {
      acc_t patch[25];
      for (int dy = -2; dy <= 2; ++dy)
        for (int dx = -2; dx <= 2; ++dx) patch[(dy + 2) * 5 + dx + 2] = mul_rn(col_filter(dy0 + dy, dx0 + dx), ratio);
      dark_refine(patch, int64_t{2}, int64_t{2}, int64_t{5}, &fx, &fy);
    }
    score = raw.v;
  }
  if (threadIdx.x == 0) {
    if (p.mode != kModeRsn) {
      x_in = mul_rn(fx, static_cast<acc_t>(p.in_w / w));
      y_in = mul_rn(fy, static_cast<acc_t>(p.in_h / h));
    }
    const acc_t bw = boxes[2 * ni], bh = boxes[2 * ni + 1];
    coords[2 * item] = to_image(x_in, static_cast<acc_t>(p.in_w), bw, centers[2 * ni]);
    coords[2 * item + 1] = to_image(y_in, static_cast<acc_t>(p.in_h), bh, centers[2 * ni + 1]);
    scores[item] = score;
  }
}

GridPlan plan_for(const DecodeParams& p) {
  const int64_t r = p.ksize / 2;
  return p.mode == kModeRsn ? make_grid_plan(p.h, p.w, r, kRsnBorder, false)
                            : make_grid_plan(p.h, p.w, r, (p.ksize - 1) / 2, true);
}

// Dynamic shared memory of one block: the blur rows of the map's grid plus r halo rows, in acc_t.
template <typename acc_t>
size_t dynamic_smem(const DecodeParams& p, const GridPlan& plan) {
  const int64_t r = p.ksize / 2;
  return p.mode == kModeStandard ? 0 : sizeof(acc_t) * ((plan.r1 - plan.r0) + 2 * r) * (plan.c1 - plan.c0);
}

template <typename scalar_t, typename acc_t>
cudaError_t shared_typed(const DecodeParams& p, size_t* needed) {
  cudaFuncAttributes attr{};
  const cudaError_t ae = cudaFuncGetAttributes(&attr, decode_kernel<scalar_t, acc_t>);
  if (ae != cudaSuccess) return ae;
  *needed = dynamic_smem<acc_t>(p, plan_for(p)) + attr.sharedSizeBytes;
  return cudaSuccess;
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_typed(const void* hm, const void* fl, const int64_t* perm, const void* centers, const void* boxes,
                         void* coords, void* scores, const DecodeParams& p, cudaStream_t stream) {
  const GridPlan plan = plan_for(p);
  const size_t smem = dynamic_smem<acc_t>(p, plan);
  auto kernel = decode_kernel<scalar_t, acc_t>;
  // The 48 KiB default limit is on static + dynamic shared memory (g and red are static): beyond it the launch
  // needs the opt-in attribute, even when the dynamic part alone is under 48 KiB (found by csrc/emulation).
  cudaFuncAttributes attr{};
  const cudaError_t ae = cudaFuncGetAttributes(&attr, kernel);
  if (ae != cudaSuccess) return ae;
  if (smem + attr.sharedSizeBytes > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  RSN_LAUNCH(static_cast<unsigned>(p.n * p.k), kThreads, smem, stream, kernel)(
      static_cast<const scalar_t*>(hm), static_cast<const scalar_t*>(fl), perm, static_cast<const acc_t*>(centers),
      static_cast<const acc_t*>(boxes), static_cast<acc_t*>(coords), static_cast<acc_t*>(scores), p, plan,
      p.ksize);
  return cudaGetLastError();
}

}  // namespace

cudaError_t decode_heatmaps_shared_memory(const DecodeParams& p, DecodeDType dtype, size_t* needed, size_t* limit) {
  int dev = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  *limit = static_cast<size_t>(optin);
  switch (dtype) {
    case DecodeDType::kFloat64:
      return shared_typed<double, double>(p, needed);
    case DecodeDType::kFloat32:
      return shared_typed<float, float>(p, needed);
    case DecodeDType::kFloat16:
      return shared_typed<__half, float>(p, needed);
    case DecodeDType::kBFloat16:
      return shared_typed<__nv_bfloat16, float>(p, needed);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_decode_heatmaps(const void* heatmaps, const void* flipped, const int64_t* flip_perm,
                                   const void* centers, const void* box_sizes, void* coords, void* scores,
                                   const DecodeParams& p, DecodeDType dtype, cudaStream_t stream) {
  if (p.n * p.k == 0) return cudaSuccess;
  if (p.ksize < 1 || p.ksize >= kMaxTaps) return cudaErrorInvalidValue;
  switch (dtype) {
    case DecodeDType::kFloat64:
      return launch_typed<double, double>(heatmaps, flipped, flip_perm, centers, box_sizes, coords, scores, p,
                                          stream);
    case DecodeDType::kFloat32:
      return launch_typed<float, float>(heatmaps, flipped, flip_perm, centers, box_sizes, coords, scores, p,
                                        stream);
    case DecodeDType::kFloat16:
      return launch_typed<__half, float>(heatmaps, flipped, flip_perm, centers, box_sizes, coords, scores, p,
                                         stream);
    case DecodeDType::kBFloat16:
      return launch_typed<__nv_bfloat16, float>(heatmaps, flipped, flip_perm, centers, box_sizes, coords, scores,
                                                p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rsn_fast
