// The CPU CUDA emulator's runtime (emulator.cpp): runs a grid block by block, the block's threads as
// cooperative fibers that switch at __syncthreads and warp shuffles. Torch-free. See README.md.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace rsn_emu {

struct LaunchSite {
  const char* kernel;  // the launch's kernel expression, e.g. "decode_kernel<scalar_t, acc_t>"
  const char* file;
  int line;
};

// The running fiber's built-in variables (set by the scheduler before it resumes a fiber). initial-exec TLS: a
// kernel reads them as one %fs-relative load instead of a __tls_get_addr call per access (which ASan intercepts;
// measured: ~17% of an emulated training step under ASan).
#define RSN_EMU_TLS thread_local __attribute__((tls_model("initial-exec")))
extern RSN_EMU_TLS uint3 t_thread_idx;
extern RSN_EMU_TLS uint3 t_block_idx;
extern RSN_EMU_TLS dim3 t_block_dim;
extern RSN_EMU_TLS dim3 t_grid_dim;

// Checks the launch like a real one would (errors name kernel, file and line), then runs every block.
// Throws std::runtime_error on a rejected launch or a deadlock.
void run_grid(const LaunchSite& site, dim3 grid, dim3 block, size_t dynamic_smem, const void* kernel,
              void (*body)(void*), void* ctx);

void sync_threads();
void* dynamic_shared();

enum class ShuffleKind { kXor, kDown, kUp, kIndex };
// Exchanges 8 bytes among the lanes of the calling warp; returns the source lane's bytes.
uint64_t shuffle_bits(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width);

template <typename T>
inline T shuffle(unsigned mask, T v, ShuffleKind kind, int arg, int width) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle_bits(mask, bits, kind, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Runtime API stand-ins (the real names are macros for these in cuda_emulation.h).
cudaError_t get_last_error();
cudaError_t set_kernel_attribute(const void* kernel, cudaFuncAttribute attr, int value);
cudaError_t kernel_attributes(cudaFuncAttributes* out, const void* kernel);
cudaError_t get_device(int* dev);
cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int dev);
const char* error_string(cudaError_t e);

// Called at load by the generated per-file registration (setup.py): kernel `name` in `file` (basename) has
// __launch_bounds__(bound).
void register_launch_bound(const char* file, const char* name, int bound);

// The emulated device: sm_70 (V100) limits.
constexpr int kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kDefaultSharedPerBlock = 48 * 1024;
constexpr size_t kOptinSharedPerBlock = 96 * 1024;
constexpr int kMultiProcessors = 80;

struct LaunchRecord {
  std::string kernel, file;
  int line;
  unsigned grid[3], block[3];
  size_t dynamic_smem, static_smem;
};
// The most recent launches (oldest first), for tests; cleared by clear_launches().
std::vector<LaunchRecord> launches();
void clear_launches();

}  // namespace rsn_emu
