// Launcher of the decode_heatmaps CUDA kernels. Torch-free, so the .cu file compiles without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace rsn_fast {

enum class DecodeDType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

struct DecodeParams {
  int64_t n, k, h, w;  // heatmaps (N, K, H, W)
  int mode;            // kModeRsn, kModeMegvii, kModeStandard, kModeDark (decode_math.h)
  int ksize;           // odd blur kernel size
  double in_w, in_h;   // network input size
};

// One thread block per map: flip-back average, blur, top-1/top-2 or neighbour offsets, DARK, scores, and the
// back-transform, all in one kernel. heatmaps/flipped: dense (N, K, H, W) of `dtype` (flipped may be null);
// flip_perm: int64 (K,) (null without flipped); centers, box_sizes: (N, 2) and coords (N, K, 2), scores (N, K)
// in the compute type (float64 for kFloat64, else float32). Returns the launch error.
// Shared memory one block of the launch needs (static + dynamic bytes: the blur rows of the map in the compute
// type) and the current device's per-block maximum (the opt-in limit: 96 KiB on sm_70). The op checks one
// against the other before it launches, so a map too large for the GPU fails with a clear error.
cudaError_t decode_heatmaps_shared_memory(const DecodeParams& p, DecodeDType dtype, size_t* needed, size_t* limit);

cudaError_t launch_decode_heatmaps(const void* heatmaps, const void* flipped, const int64_t* flip_perm,
                                   const void* centers, const void* box_sizes, void* coords, void* scores,
                                   const DecodeParams& p, DecodeDType dtype, cudaStream_t stream);

}  // namespace rsn_fast
