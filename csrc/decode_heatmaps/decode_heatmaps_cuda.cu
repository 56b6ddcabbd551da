// decode_heatmaps CUDA kernels (placeholder until the fused kernel lands: reports "not supported").
#include "decode_heatmaps/decode_heatmaps_cuda.h"

namespace rsn_fast {

cudaError_t launch_decode_heatmaps(const void*, const void*, const int64_t*, const void*, const void*, void*, void*,
                                   const DecodeParams&, DecodeDType, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace rsn_fast
