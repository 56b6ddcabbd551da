// CPU emulation of the CUDA C++ subset our kernels use (csrc/emulation/README.md). Included by
// common/cuda_launch.cuh when RSN_FAST_CUDA_EMULATION is defined; the .cu files then compile with the host
// compiler. Types (dim3, __half, __nv_bfloat16, cudaError_t) come from the real CUDA headers, whose host
// conversions round to nearest even like the device ones; this header supplies the device side: kernel
// qualifiers, built-in indices, __shared__ storage, barriers, warp shuffles, intrinsics, and the launch.
#pragma once

#ifndef RSN_FAST_CUDA_EMULATION
#error "cuda_emulation.h is for the RSN_FAST_CUDA_EMULATION build only"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emulation/emulator.h"

// ---- qualifiers ----
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#define __global__
#define __device__
#define __host__
// One block runs at a time, so static storage is per-block storage. The emulator finds a kernel's __shared__
// variables (its local statics) in the symbol table, sums their sizes for the launch check and poisons them at
// every block start (emulator.cpp).
#define __shared__ static
// The bound is checked at launch: setup.py scans the sources for it and registers (kernel, bound) per file.
#define __launch_bounds__(...)

// ---- built-in variables (the running fiber's) ----
#define threadIdx (::rsn_emu::t_thread_idx)
#define blockIdx (::rsn_emu::t_block_idx)
#define blockDim (::rsn_emu::t_block_dim)
#define gridDim (::rsn_emu::t_grid_dim)
#define warpSize 32

// ---- synchronisation ----
inline void __syncthreads() { ::rsn_emu::sync_threads(); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::rsn_emu::shuffle(mask, v, ::rsn_emu::ShuffleKind::kXor, lane_mask, width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::rsn_emu::shuffle(mask, v, ::rsn_emu::ShuffleKind::kDown, static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::rsn_emu::shuffle(mask, v, ::rsn_emu::ShuffleKind::kUp, static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::rsn_emu::shuffle(mask, v, ::rsn_emu::ShuffleKind::kIndex, src, width);
}

// ---- intrinsics (the _rn ones are exact IEEE operations; -ffp-contract=off keeps them unfused) ----
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }

// CUDA's global min/max overloads (mixed integer types promote, as in device code).
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// ---- runtime API used by the launchers ----
#define cudaGetLastError ::rsn_emu::get_last_error
#define cudaFuncSetAttribute ::rsn_emu::func_set_attribute
#define cudaFuncGetAttributes ::rsn_emu::func_get_attributes
#define cudaGetDevice ::rsn_emu::get_device
#define cudaDeviceGetAttribute ::rsn_emu::device_get_attribute

namespace rsn_emu {

template <typename F>
inline cudaError_t func_set_attribute(F* kernel, cudaFuncAttribute attr, int value) {
  return set_kernel_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

template <typename F>
inline cudaError_t func_get_attributes(cudaFuncAttributes* out, F* kernel) {
  return kernel_attributes(out, reinterpret_cast<const void*>(kernel));
}

// RSN_LAUNCH(grid, block, smem, stream, kernel)(args...): runs the grid on the host before returning.
template <typename... P>
struct Launcher {
  LaunchSite site;
  dim3 grid, block;
  size_t smem;
  void (*kernel)(P...);

  template <typename... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    std::tuple<std::decay_t<P>...> args(static_cast<std::decay_t<P>>(std::forward<A>(a))...);
    auto body = [&]() { std::apply(kernel, args); };
    run_grid(site, grid, block, smem, reinterpret_cast<const void*>(kernel), &call_body<decltype(body)>, &body);
  }

 private:
  template <typename B>
  static void call_body(void* b) {
    (*static_cast<B*>(b))();
  }
};

template <typename... P>
inline Launcher<P...> make_launcher(const char* name, const char* file, int line, dim3 grid, dim3 block,
                                    size_t smem, cudaStream_t, void (*kernel)(P...)) {
  return Launcher<P...>{LaunchSite{name, file, line}, grid, block, smem, kernel};
}

}  // namespace rsn_emu

#define RSN_LAUNCH(grid, block, smem, stream, ...) \
  ::rsn_emu::make_launcher(#__VA_ARGS__, __FILE__, __LINE__, grid, block, smem, stream, __VA_ARGS__)
// Dynamic shared memory: the launch's buffer (poisoned at each block start), 16-byte aligned.
#define RSN_EXTERN_SHARED(type, name) type* name = static_cast<type*>(::rsn_emu::dynamic_shared())
