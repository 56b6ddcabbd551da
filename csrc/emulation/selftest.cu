// Kernels that break the rules on purpose, to show the emulator catches each break (tests/ops/test_emulation.py).
// Compiled into the emulation build only (setup.py); never into a GPU build.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda_launch.cuh"

namespace rsn_fast {
namespace {

__global__ void __launch_bounds__(64) bounded_kernel(float* out) { out[threadIdx.x] = 1.f; }

__global__ void plain_kernel(float* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) out[0] = 1.f;
}

__global__ void half_barrier_kernel(float* out) {
  if (threadIdx.x < 16) __syncthreads();  // only half the block reaches the barrier
  out[threadIdx.x] = 1.f;
}

__global__ void half_shuffle_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // only half of each warp
  out[threadIdx.x] = v;
}

__global__ void big_shared_kernel(float* out) {
  RSN_EXTERN_SHARED(float, dyn);
  __shared__ float stat[1024];  // 4 KiB static + the dynamic part
  stat[threadIdx.x] = 1.f;
  dyn[threadIdx.x] = 1.f;
  __syncthreads();
  out[threadIdx.x] = stat[threadIdx.x] + dyn[threadIdx.x];
}

// Reads shared memory its writer has not written yet: without a barrier, thread t reads slot 31 - t.
__global__ void missing_barrier_kernel(float* out) {
  __shared__ float s[32];
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  out[threadIdx.x] = s[31 - threadIdx.x];
}

// Writes one element past the end of its output (caught by the AddressSanitizer build).
__global__ void out_of_bounds_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.f;  // PLANTED on purpose: <= instead of <
}

}  // namespace

// Runs one rule-breaking launch; returns the kernel's output (throws the emulator's error where it rejects it).
std::vector<float> emulation_selftest(const std::string& name) {
  std::vector<float> out(64, 0.f);
  float* o = out.data();
  if (name == "launch_bounds") {
    RSN_LAUNCH(1, 128, 0, nullptr, bounded_kernel)(o);
  } else if (name == "threads") {
    RSN_LAUNCH(1, 1025, 0, nullptr, plain_kernel)(o);
  } else if (name == "grid_z") {
    RSN_LAUNCH(dim3(1, 1, 65536), 1, 0, nullptr, plain_kernel)(o);
  } else if (name == "barrier") {
    RSN_LAUNCH(1, 32, 0, nullptr, half_barrier_kernel)(o);
  } else if (name == "shuffle") {
    RSN_LAUNCH(1, 64, 0, nullptr, half_shuffle_kernel)(o);
  } else if (name == "shared") {
    RSN_LAUNCH(1, 64, 45 * 1024, nullptr, big_shared_kernel)(o);
  } else if (name == "shared_opt_in") {
    cudaFuncSetAttribute(big_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 45 * 1024);
    RSN_LAUNCH(1, 64, 45 * 1024, nullptr, big_shared_kernel)(o);
    cudaFuncSetAttribute(big_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 44 * 1024);  // default
  } else if (name == "missing_barrier") {
    RSN_LAUNCH(1, 32, 0, nullptr, missing_barrier_kernel)(o);
  } else if (name == "out_of_bounds") {
    const int n = 37;
    float* buf = static_cast<float*>(std::malloc(n * sizeof(float)));
    RSN_LAUNCH(2, 32, 0, nullptr, out_of_bounds_kernel)(buf, n);
    for (int i = 0; i < n; ++i) out[i] = buf[i];
    std::free(buf);
  } else {
    throw std::invalid_argument("emulation_selftest: unknown case " + name);
  }
  return out;
}

}  // namespace rsn_fast
