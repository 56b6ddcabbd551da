// CUDA kernels of megvii_targets (one block per map: the two 1-D responses in shared memory, then the outer
// product) and gaussian_targets (one thread per pixel). Arithmetic from targets_math.h, as on the CPU.
#include <algorithm>

#include "common/cuda_launch.cuh"
#include "megvii_targets/megvii_targets_cuda.h"
#include "megvii_targets/targets_math.h"

namespace rsn_fast {
namespace {

constexpr int kThreads = 256;

__global__ void megvii_targets_kernel(const double* __restrict__ keypoints,  // (N, K, 2)
                                      const double* __restrict__ weights,    // (N, K)
                                      float* __restrict__ out,               // (N, L, K, H, W)
                                      int64_t kk, int64_t width, int64_t height, TargetKernels kernels,
                                      bool center_norm) {
  RSN_EXTERN_SHARED(float, smem);  // row (W) then col (H)
  float* row = smem;
  float* col = smem + width;
  __shared__ float scale;
  __shared__ int64_t cell[2];
  __shared__ bool valid;
  const int64_t item = blockIdx.x;  // (b, l, j) in output order
  const int64_t j = item % kk, l = (item / kk) % kernels.count, b = item / (kk * kernels.count);
  const int64_t hw = width * height;
  float* map = out + item * hw;
  if (threadIdx.x == 0) {
    valid = megvii_cell(keypoints[(b * kk + j) * 2], keypoints[(b * kk + j) * 2 + 1], weights[b * kk + j], width,
                        height, &cell[0], &cell[1]);
  }
  __syncthreads();
  if (!valid) {
    for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) map[i] = 0.f;
    return;
  }
  const int64_t ks = kernels.k[l];
  const double total = cv2_tap_total(ks);
  for (int64_t i = threadIdx.x; i < width + height; i += blockDim.x) {
    if (i < width) row[i] = static_cast<float>(one_hot_response(cell[0], i, width, ks, total));
    else col[i - width] = static_cast<float>(one_hot_response(cell[1], i - width, height, ks, total));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float denom;
    if (center_norm) {
      denom = __fmul_rn(row[cell[0]], col[cell[1]]);
    } else {
      float rmax = row[0], cmax = col[0];
      for (int64_t i = 1; i < width; ++i) rmax = fmaxf(rmax, row[i]);
      for (int64_t i = 1; i < height; ++i) cmax = fmaxf(cmax, col[i]);
      denom = __fmul_rn(rmax, cmax);
    }
    scale = __fdiv_rn(255.0f, denom);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] = __fmul_rn(row[i], scale);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) map[i] = __fmul_rn(col[i / width], row[i % width]);
}

__global__ void gaussian_targets_kernel(const float* __restrict__ keypoints,  // (N, K, 2)
                                        const float* __restrict__ weights,    // (N, K)
                                        float* __restrict__ out,              // (N, K, H, W)
                                        int64_t total, int64_t width, int64_t height, GaussPatch patch) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t hw = width * height, item = i / hw, x = i % width, y = (i / width) % height;
  int64_t left, top, right, bottom;
  float v = 0.f;
  if (gauss_origin(keypoints[2 * item], keypoints[2 * item + 1], weights[item], patch, width, height, &left, &top,
                   &right, &bottom)) {
    const int64_t gx = x - left, gy = y - top;
    if (gx >= 0 && gx < patch.size && x < right && gy >= 0 && gy < patch.size && y < bottom)
      v = gauss_value(gx, gy, patch);
  }
  out[i] = v;
}

}  // namespace

cudaError_t launch_megvii_targets(const double* keypoints, const double* weights, float* out, int64_t n, int64_t k,
                                  int64_t width, int64_t height, const TargetKernels& kernels, bool center_norm,
                                  cudaStream_t stream) {
  const int64_t maps = n * k * kernels.count;
  if (maps == 0) return cudaSuccess;
  const size_t smem = sizeof(float) * (width + height);
  RSN_LAUNCH(static_cast<unsigned>(maps), kThreads, smem, stream, megvii_targets_kernel)(keypoints, weights, out, k, width,
                                                                                height, kernels, center_norm);
  return cudaGetLastError();
}

cudaError_t launch_gaussian_targets(const float* keypoints, const float* weights, float* out, int64_t n, int64_t k,
                                    int64_t width, int64_t height, double sigma, cudaStream_t stream) {
  const int64_t total = n * k * width * height;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  RSN_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, stream, gaussian_targets_kernel)(keypoints, weights, out, total,
                                                                                 width, height, gauss_patch(sigma));
  return cudaGetLastError();
}

}  // namespace rsn_fast
