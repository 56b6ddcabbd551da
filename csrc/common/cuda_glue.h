// The torch-side CUDA glue of the .cpp files, in one place so an emulation build (csrc/emulation) differs only
// here: the device check, the device guard, the stream, the error string, and the dispatch key of the CUDA
// kernels. Include only under RSN_FAST_WITH_CUDA. c10/cuda headers only: ATen/cuda/CUDAContext.h pulls in
// cuSPARSE/cuBLAS headers that minimal toolkits lack.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#ifdef RSN_FAST_CUDA_EMULATION
#include "emulation/emulator.h"
#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rsn_fast {

#ifdef RSN_FAST_CUDA_EMULATION
// The emulated GPU runs the CUDA kernels on host memory: its "CUDA tensors" are CPU tensors.
inline bool on_cuda_device(const at::Tensor& t) { return t.is_cpu(); }
inline const char* cuda_device_name() { return "a CPU tensor (CUDA emulation build)"; }
inline cudaStream_t cuda_stream() { return nullptr; }
inline const char* cuda_error_string(cudaError_t e) { return rsn_emu::error_string(e); }
struct CudaDeviceGuard {
  explicit CudaDeviceGuard(const c10::Device&) {}
};
// The CUDA kernels register for CPU tensors; an op that also has a C++ CPU kernel under its own name gets the
// CUDA one under <name>_emulated_cuda (RSN_FAST_CUDA_OP_NAME), which rsn_fast/ops/*/ calls for backend="cuda".
#define RSN_FAST_CUDA_KEY CPU
#define RSN_FAST_CUDA_OP_NAME(name) name "_emulated_cuda"
#else
inline bool on_cuda_device(const at::Tensor& t) { return t.is_cuda(); }
inline const char* cuda_device_name() { return "a CUDA tensor"; }
inline cudaStream_t cuda_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
inline const char* cuda_error_string(cudaError_t e) { return cudaGetErrorString(e); }
using CudaDeviceGuard = c10::cuda::CUDAGuard;
#define RSN_FAST_CUDA_KEY CUDA
#define RSN_FAST_CUDA_OP_NAME(name) name
#endif

}  // namespace rsn_fast
