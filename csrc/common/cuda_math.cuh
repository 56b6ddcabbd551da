// Device helpers shared by the .cu kernels (torch-free): fp32 <-> storage type conversions and a deterministic
// warp sum. Conversions use intrinsics available on every arch we build for (sm_70 included).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace rsn_fast {
namespace cuda_math {

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Sum over a warp with a fixed butterfly pattern (deterministic: same inputs, same order, same result).
// Every lane of the warp must call it.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cuda_math
}  // namespace rsn_fast
