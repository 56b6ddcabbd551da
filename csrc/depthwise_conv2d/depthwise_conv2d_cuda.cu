// Depthwise convolution CUDA kernels (no torch headers: see depthwise_conv2d_cuda.h). sm_70-clean: half and
// bfloat16 are only converted with __half2float/__float2half_rn and __bfloat162float/__float2bfloat16_rn, which
// cuda_fp16.h / cuda_bf16.h provide for every arch; all arithmetic is float32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda_launch.cuh"
#include "common/cuda_math.cuh"

#include "depthwise_conv2d/depthwise_conv2d_cuda.h"

namespace rsn_fast {
namespace {

constexpr int kMaxK = 31;

using cuda_math::from_f;
using cuda_math::to_f;

using cuda_math::warp_sum;

// ---- NCHW forward: one (n, c) plane tile of kTileH x kTileW outputs per block, input halo in shared memory ----
constexpr int kTileW = 32, kTileH = 16, kRowsPerThread = 2;  // block (32, 8), each thread 2 rows
constexpr int kHaloW = kTileW + kMaxK - 1, kHaloH = kTileH + kMaxK - 1;

template <typename T>
__global__ void __launch_bounds__(256) dw_conv_nchw_kernel(
    const T* __restrict__ x,      // (N, C, H_in, W_in) dense
    const float* __restrict__ w,  // (C, K, K)
    const float* __restrict__ b,  // (C,) or null
    T* __restrict__ y,            // (N, C, H_out, W_out) dense
    float* __restrict__ stats,    // null, or float32 (2, P, C): per-block sum and sum of squares of y
    int C, int H_in, int W_in, int H_out, int W_out, int K, int pad, bool flip) {
  __shared__ float xs[kHaloH * kHaloW];
  __shared__ float red[2][8];
  __shared__ float ws[kMaxK * kMaxK];
  const int64_t plane = blockIdx.x;  // n * C + c (grid x: up to 2^31 - 1 planes)
  const int c = static_cast<int>(plane % C);
  const int oh0 = blockIdx.y * kTileH, ow0 = blockIdx.z * kTileW;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const T* xp = x + plane * H_in * W_in;
  const int hh = kTileH + K - 1, hw = kTileW + K - 1;
  for (int idx = tid; idx < K * K; idx += 256) {
    const int src = flip ? K * K - 1 - idx : idx;  // flipped kernel: w[k-1-i, k-1-j]
    ws[idx] = w[c * K * K + src];
  }
  for (int idx = tid; idx < hh * hw; idx += 256) {
    const int r = idx / hw, q = idx % hw;
    const int ih = oh0 - pad + r, iw = ow0 - pad + q;
    xs[r * kHaloW + q] = (ih >= 0 && ih < H_in && iw >= 0 && iw < W_in) ? to_f(xp[ih * W_in + iw]) : 0.f;
  }
  __syncthreads();
  const float bias = b ? b[c] : 0.f;
  const int tx = threadIdx.x;
  float acc[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = bias;
  for (int i = 0; i < K; ++i) {
    for (int j = 0; j < K; ++j) {
      const float wv = ws[i * K + j];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int ty = threadIdx.y + r * 8;
        acc[r] = fmaf(xs[(ty + i) * kHaloW + tx + j], wv, acc[r]);
      }
    }
  }
  T* yp = y + plane * H_out * W_out;
  float s = 0.f, s2 = 0.f;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int oh = oh0 + threadIdx.y + r * 8, ow = ow0 + tx;
    if (oh < H_out && ow < W_out) {
      const T v = from_f<T>(acc[r]);
      yp[oh * W_out + ow] = v;
      const float f = to_f(v);  // statistics of the stored (rounded) values, as BatchNorm sees them
      s += f;
      s2 += f * f;
    }
  }
  if (stats != nullptr) {  // uniform over the block
    s = warp_sum(s);
    s2 = warp_sum(s2);
    if (tx == 0) {
      red[0][threadIdx.y] = s;
      red[1][threadIdx.y] = s2;
    }
    __syncthreads();
    if (tid == 0) {
      float a = 0.f, b = 0.f;
      for (int q = 0; q < 8; ++q) {
        a += red[0][q];
        b += red[1][q];
      }
      const int64_t n = plane / C;
      const int64_t rows = static_cast<int64_t>(gridDim.x / C) * gridDim.y * gridDim.z;  // P
      const int64_t row = (n * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z;
      stats[row * C + c] = a;
      stats[(rows + row) * C + c] = b;
    }
  }
}

// ---- NHWC forward: threadIdx.x = channel (coalesced), each thread a strip of kStrip outputs along W ----
constexpr int kStrip = 4;

template <typename T>
__global__ void __launch_bounds__(256) dw_conv_nhwc_kernel(
    const T* __restrict__ x,      // (N, H_in, W_in, C) dense
    const float* __restrict__ w,  // (C, K, K)
    const float* __restrict__ b,  // (C,) or null
    T* __restrict__ y,            // (N, H_out, W_out, C) dense
    float* __restrict__ stats,    // null, or float32 (2, P, C): per-block sum and sum of squares of y
    int C, int H_in, int W_in, int H_out, int W_out, int K, int pad, bool flip, int rows_per_block) {
  __shared__ float red[2][8][32];
  const int c = blockIdx.y * 32 + threadIdx.x;
  const int ow0 = (blockIdx.z * 8 + threadIdx.y) * kStrip;
  const int row_blocks = (H_out + rows_per_block - 1) / rows_per_block;
  const int64_t nh = blockIdx.x;  // n * row_blocks + row block (grid x: up to 2^31 - 1)
  const int64_t n = nh / row_blocks;
  const int oh_begin = static_cast<int>(nh % row_blocks) * rows_per_block;
  const int oh_end = min(oh_begin + rows_per_block, H_out);
  const bool active = c < C && ow0 < W_out;
  float sum = 0.f, sum2 = 0.f;
  for (int oh = oh_begin; active && oh < oh_end; ++oh) {
    const float* wc = w + static_cast<int64_t>(c) * K * K;
    float acc[kStrip];
    const float bias = b ? b[c] : 0.f;
#pragma unroll
    for (int s = 0; s < kStrip; ++s) acc[s] = bias;
    for (int i = 0; i < K; ++i) {
      const int ih = oh + i - pad;
      if (ih < 0 || ih >= H_in) continue;
      const T* xrow = x + ((n * H_in + ih) * W_in) * C + c;
      const int wi = flip ? (K - 1 - i) : i;
      // input column q feeds output s through tap j = q - s (sliding window: each x value is loaded once)
      for (int q = 0; q < K + kStrip - 1; ++q) {
        const int iw = ow0 - pad + q;
        if (iw < 0 || iw >= W_in) continue;
        const float xv = to_f(xrow[static_cast<int64_t>(iw) * C]);
#pragma unroll
        for (int s = 0; s < kStrip; ++s) {
          const int j = q - s;
          if (j >= 0 && j < K) acc[s] = fmaf(xv, __ldg(wc + wi * K + (flip ? K - 1 - j : j)), acc[s]);
        }
      }
    }
    T* yrow = y + ((n * H_out + oh) * W_out) * C + c;
#pragma unroll
    for (int s = 0; s < kStrip; ++s) {
      if (ow0 + s < W_out) {
        const T v = from_f<T>(acc[s]);
        yrow[static_cast<int64_t>(ow0 + s) * C] = v;
        const float f = to_f(v);  // statistics of the stored (rounded) values, as BatchNorm sees them
        sum += f;
        sum2 += f * f;
      }
    }
  }
  if (stats != nullptr) {  // uniform over the block; threads past C or W_out contribute zeros
    red[0][threadIdx.y][threadIdx.x] = sum;
    red[1][threadIdx.y][threadIdx.x] = sum2;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
      float a = 0.f, b2 = 0.f;
      for (int q = 0; q < 8; ++q) {
        a += red[0][q][threadIdx.x];
        b2 += red[1][q][threadIdx.x];
      }
      const int64_t rows = static_cast<int64_t>(gridDim.x) * gridDim.z;  // P
      const int64_t row = nh * gridDim.z + blockIdx.z;
      stats[row * C + c] = a;
      stats[(rows + row) * C + c] = b2;
    }
  }
}

// ---- NCHW weight gradient: block (c, chunk); loops over the chunk's (n, tile) items with g and x in smem ----
constexpr int kWgTileH = 16, kWgTileW = 32, kWgThreads = 256, kMaxTapsPerThread = 4;  // 4*256 >= 31*31

template <typename T>
__global__ void __launch_bounds__(kWgThreads) dw_wgrad_nchw_kernel(
    const T* __restrict__ g,  // (N, C, H_out, W_out) dense
    const T* __restrict__ x,  // (N, C, H_in, W_in) dense
    float* __restrict__ part,  // (chunks, C, K*K)
    int N, int C, int H_in, int W_in, int H_out, int W_out, int K, int pad) {
  __shared__ float xs[(kWgTileH + kMaxK - 1) * (kWgTileW + kMaxK - 1)];
  __shared__ float gs[kWgTileH * kWgTileW];
  __shared__ float red[kWgThreads];
  const int c = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
  const int tid = threadIdx.x, KK = K * K;
  const int hw = kWgTileW + K - 1, hh = kWgTileH + K - 1;
  // small kernels: split the tile's rows among `groups` thread groups, one tap per thread
  const int groups = KK <= kWgThreads ? kWgThreads / KK : 1;
  const int grp = KK <= kWgThreads ? tid / KK : 0;
  const int tiles_w = (W_out + kWgTileW - 1) / kWgTileW;
  const int tiles = tiles_w * ((H_out + kWgTileH - 1) / kWgTileH);
  float acc[kMaxTapsPerThread] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t item = chunk; item < static_cast<int64_t>(N) * tiles; item += chunks) {
    const int64_t n = item / tiles;
    const int tile = static_cast<int>(item % tiles);
    const int oh0 = (tile / tiles_w) * kWgTileH, ow0 = (tile % tiles_w) * kWgTileW;
    const T* gp = g + (n * C + c) * H_out * W_out;
    const T* xp = x + (n * C + c) * H_in * W_in;
    __syncthreads();  // the previous item's smem reads are done
    for (int idx = tid; idx < kWgTileH * kWgTileW; idx += kWgThreads) {
      const int oh = oh0 + idx / kWgTileW, ow = ow0 + idx % kWgTileW;
      gs[idx] = (oh < H_out && ow < W_out) ? to_f(gp[oh * W_out + ow]) : 0.f;
    }
    for (int idx = tid; idx < hh * hw; idx += kWgThreads) {
      const int r = idx / hw, q = idx % hw;
      const int ih = oh0 - pad + r, iw = ow0 - pad + q;
      xs[r * hw + q] = (ih >= 0 && ih < H_in && iw >= 0 && iw < W_in) ? to_f(xp[ih * W_in + iw]) : 0.f;
    }
    __syncthreads();
    if (grp < groups) {
#pragma unroll
      for (int r = 0; r < kMaxTapsPerThread; ++r) {
        const int t = (KK <= kWgThreads ? tid % KK : tid) + r * kWgThreads;
        if (t >= KK || (KK <= kWgThreads && r > 0)) break;
        const int i = t / K, j = t % K;
        float a = 0.f;
        for (int py = grp; py < kWgTileH; py += groups) {
          const float* xr = xs + (py + i) * hw + j;
          const float* gr = gs + py * kWgTileW;
          for (int px = 0; px < kWgTileW; ++px) a = fmaf(gr[px], xr[px], a);
        }
        acc[r] += a;
      }
    }
  }
  float* out = part + (static_cast<int64_t>(chunk) * C + c) * KK;
  if (KK <= kWgThreads) {
    red[tid] = grp < groups ? acc[0] : 0.f;
    __syncthreads();
    if (tid < KK) {
      float s = 0.f;
      for (int q = 0; q < groups; ++q) s += red[q * KK + tid];
      out[tid] = s;
    }
  } else {
#pragma unroll
    for (int r = 0; r < kMaxTapsPerThread; ++r) {
      const int t = tid + r * kWgThreads;
      if (t < KK) out[t] = acc[r];
    }
  }
}

// Rows of output per NHWC block: one without statistics; eight with them, so there are 8x fewer partial sums.
int nhwc_rows_per_block(bool stats) { return stats ? 8 : 1; }

dim3 conv_grid(int64_t n, int64_t c, int64_t h_out, int64_t w_out, bool channels_last, bool stats) {
  if (channels_last) {
    const int64_t r = nhwc_rows_per_block(stats);
    return dim3(static_cast<unsigned>(n * ((h_out + r - 1) / r)), static_cast<unsigned>((c + 31) / 32),
                static_cast<unsigned>((w_out + 8 * kStrip - 1) / (8 * kStrip)));
  }
  return dim3(static_cast<unsigned>(n * c), static_cast<unsigned>((h_out + kTileH - 1) / kTileH),
              static_cast<unsigned>((w_out + kTileW - 1) / kTileW));
}

template <typename T>
cudaError_t conv_typed(const void* x, const float* w, const float* b, void* y, float* stats, int64_t n, int64_t c,
                       int64_t h_in, int64_t w_in, int64_t h_out, int64_t w_out, int k, int pad, bool flip,
                       bool channels_last, cudaStream_t stream) {
  const T* xt = static_cast<const T*>(x);
  T* yt = static_cast<T*>(y);
  const dim3 block(32, 8);
  const dim3 grid = conv_grid(n, c, h_out, w_out, channels_last, stats != nullptr);
  if (channels_last) {
    RSN_LAUNCH(grid, block, 0, stream, dw_conv_nhwc_kernel<T>)(
        xt, w, b, yt, stats, static_cast<int>(c), static_cast<int>(h_in), static_cast<int>(w_in),
        static_cast<int>(h_out), static_cast<int>(w_out), k, pad, flip, nhwc_rows_per_block(stats != nullptr));
  } else {
    RSN_LAUNCH(grid, block, 0, stream, dw_conv_nchw_kernel<T>)(xt, w, b, yt, stats, static_cast<int>(c),
                                                       static_cast<int>(h_in), static_cast<int>(w_in),
                                                       static_cast<int>(h_out), static_cast<int>(w_out), k, pad,
                                                       flip);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t wgrad_typed(const void* g, const void* x, float* part, int chunks, int64_t n, int64_t c, int64_t h_in,
                        int64_t w_in, int64_t h_out, int64_t w_out, int k, int pad, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(c), static_cast<unsigned>(chunks));
  RSN_LAUNCH(grid, kWgThreads, 0, stream, dw_wgrad_nchw_kernel<T>)(
      static_cast<const T*>(g), static_cast<const T*>(x), part, static_cast<int>(n), static_cast<int>(c),
      static_cast<int>(h_in), static_cast<int>(w_in), static_cast<int>(h_out), static_cast<int>(w_out), k, pad);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_depthwise_conv2d(const void* x, const float* w, const float* b, void* y, int64_t n, int64_t c,
                                    int64_t h_in, int64_t w_in, int64_t h_out, int64_t w_out, int k, int pad,
                                    bool flip, bool channels_last, DType dtype, cudaStream_t stream, float* stats) {
  if (k < 1 || k > kMaxK) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return conv_typed<float>(x, w, b, y, stats, n, c, h_in, w_in, h_out, w_out, k, pad, flip, channels_last,
                               stream);
    case DType::kFloat16:
      return conv_typed<__half>(x, w, b, y, stats, n, c, h_in, w_in, h_out, w_out, k, pad, flip, channels_last,
                                stream);
    case DType::kBFloat16:
      return conv_typed<__nv_bfloat16>(x, w, b, y, stats, n, c, h_in, w_in, h_out, w_out, k, pad, flip,
                                       channels_last, stream);
  }
  return cudaErrorInvalidValue;
}

int64_t depthwise_conv2d_stats_rows(int64_t n, int64_t c, int64_t h_out, int64_t w_out, bool channels_last) {
  const dim3 g = conv_grid(n, c, h_out, w_out, channels_last, true);
  return channels_last ? static_cast<int64_t>(g.x) * g.z : static_cast<int64_t>(g.x / c) * g.y * g.z;
}

int depthwise_conv2d_wgrad_chunks(int64_t n, int64_t c, int64_t h_out, int64_t w_out) {
  int dev = 0, sms = 80;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const int64_t items = n * ((h_out + kWgTileH - 1) / kWgTileH) * ((w_out + kWgTileW - 1) / kWgTileW);
  int64_t chunks = (4LL * sms + c - 1) / c;  // about four blocks per multiprocessor in all
  if (chunks > items) chunks = items;
  return static_cast<int>(chunks < 1 ? 1 : chunks);
}

cudaError_t launch_depthwise_conv2d_wgrad(const void* g, const void* x, float* part, int chunks, int64_t n,
                                          int64_t c, int64_t h_in, int64_t w_in, int64_t h_out, int64_t w_out,
                                          int k, int pad, DType dtype, cudaStream_t stream) {
  if (k < 1 || k > kMaxK) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return wgrad_typed<float>(g, x, part, chunks, n, c, h_in, w_in, h_out, w_out, k, pad, stream);
    case DType::kFloat16:
      return wgrad_typed<__half>(g, x, part, chunks, n, c, h_in, w_in, h_out, w_out, k, pad, stream);
    case DType::kBFloat16:
      return wgrad_typed<__nv_bfloat16>(g, x, part, chunks, n, c, h_in, w_in, h_out, w_out, k, pad, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rsn_fast
