// Launchers of the megvii_targets / gaussian_targets CUDA kernels. Torch-free.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace rsn_fast {

constexpr size_t kMaxTargetKernels = 8;

struct TargetKernels {
  int count;                   // L
  int k[kMaxTargetKernels];    // odd blur sizes
};

// keypoints: float64 (N, K, 2) heatmap px; weights: float64 (N, K); out: float32 (N, L, K, H, W).
cudaError_t launch_megvii_targets(const double* keypoints, const double* weights, float* out, int64_t n, int64_t k,
                                  int64_t width, int64_t height, const TargetKernels& kernels, bool center_norm,
                                  cudaStream_t stream);

// keypoints: float32 (N, K, 2); weights: float32 (N, K); out: float32 (N, K, H, W), peak 1.
cudaError_t launch_gaussian_targets(const float* keypoints, const float* weights, float* out, int64_t n, int64_t k,
                                    int64_t width, int64_t height, double sigma, cudaStream_t stream);

}  // namespace rsn_fast
