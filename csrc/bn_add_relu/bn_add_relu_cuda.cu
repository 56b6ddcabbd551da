// bn_add_relu CUDA kernel (no torch headers: see bn_add_relu_cuda.h). sm_70-clean: bf16 is only converted
// with __bfloat162float / __float2bfloat16, which cuda_bf16.h provides for every arch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda_launch.cuh"
#include "common/cuda_math.cuh"

#include "bn_add_relu/bn_add_relu_cuda.h"

namespace rsn_fast {
namespace {

using cuda_math::from_f;
using cuda_math::to_f;

// One thread per element, grid-stride. Index type I is int32 when the tensor has < 2^31 elements (cheaper
// division for the channel index), else int64.
template <typename T, typename I, bool kChannelsLast, bool kResidual>
__global__ void bn_add_relu_kernel(const T* __restrict__ x,         // (N, C, H, W) in NCHW or NHWC order
                                   const float* __restrict__ scale,  // (C,)
                                   const float* __restrict__ shift,  // (C,)
                                   const T* __restrict__ residual,   // like x, or null when !kResidual
                                   T* __restrict__ y,                // like x
                                   I numel, I c, I hw, bool relu) {
  const I stride = static_cast<I>(blockDim.x) * static_cast<I>(gridDim.x);
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const I ch = kChannelsLast ? i % c : (i / hw) % c;
    float v = fmaf(to_f(x[i]), __ldg(scale + ch), __ldg(shift + ch));
    if (kResidual) v += to_f(residual[i]);
    // `v < 0 ? 0 : v` keeps NaN, like torch.relu (fmaxf would turn NaN into 0).
    if (relu) v = v < 0.f ? 0.f : v;
    y[i] = from_f<T>(v);
  }
}

template <typename T, typename I>
cudaError_t launch_typed(const void* x, const float* scale, const float* shift, const void* residual, void* y,
                         int64_t numel, int64_t c, int64_t hw, bool channels_last, bool relu,
                         cudaStream_t stream) {
  constexpr int kThreads = 256;
  // Enough blocks to fill any current GPU several times over; the grid-stride loop covers the rest.
  const int64_t blocks64 = (numel + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(blocks64 < 65536 ? blocks64 : 65536);
  const T* xt = static_cast<const T*>(x);
  const T* rt = static_cast<const T*>(residual);
  T* yt = static_cast<T*>(y);
  const I n = static_cast<I>(numel), ci = static_cast<I>(c), hwi = static_cast<I>(hw);
  if (channels_last) {
    if (rt)
      RSN_LAUNCH(blocks, kThreads, 0, stream, bn_add_relu_kernel<T, I, true, true>)(xt, scale, shift, rt, yt, n, ci, hwi, relu);
    else
      RSN_LAUNCH(blocks, kThreads, 0, stream, bn_add_relu_kernel<T, I, true, false>)(xt, scale, shift, rt, yt, n, ci, hwi, relu);
  } else {
    if (rt)
      RSN_LAUNCH(blocks, kThreads, 0, stream, bn_add_relu_kernel<T, I, false, true>)(xt, scale, shift, rt, yt, n, ci, hwi, relu);
    else
      RSN_LAUNCH(blocks, kThreads, 0, stream, bn_add_relu_kernel<T, I, false, false>)(xt, scale, shift, rt, yt, n, ci, hwi, relu);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_index(const void* x, const float* scale, const float* shift, const void* residual, void* y,
                         int64_t numel, int64_t c, int64_t hw, bool channels_last, bool relu,
                         cudaStream_t stream) {
  // The grid-stride loop may step up to one grid past numel, so keep that margin below INT32_MAX.
  if (numel + 65536LL * 256 < (1LL << 31))
    return launch_typed<T, int32_t>(x, scale, shift, residual, y, numel, c, hw, channels_last, relu, stream);
  return launch_typed<T, int64_t>(x, scale, shift, residual, y, numel, c, hw, channels_last, relu, stream);
}

}  // namespace

cudaError_t launch_bn_add_relu(const void* x, const float* scale, const float* shift, const void* residual,
                               void* y, int64_t n, int64_t c, int64_t hw, bool channels_last, bool relu,
                               DType dtype, cudaStream_t stream) {
  const int64_t numel = n * c * hw;
  if (numel == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat32:
      return launch_index<float>(x, scale, shift, residual, y, numel, c, hw, channels_last, relu, stream);
    case DType::kFloat16:
      return launch_index<__half>(x, scale, shift, residual, y, numel, c, hw, channels_last, relu, stream);
    case DType::kBFloat16:
      return launch_index<__nv_bfloat16>(x, scale, shift, residual, y, numel, c, hw, channels_last, relu, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rsn_fast
