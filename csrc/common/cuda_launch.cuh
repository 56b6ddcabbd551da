// The one launch syntax and the one dynamic-shared-memory declaration of every .cu file, so the same source builds
// with nvcc (plain <<<>>>, unchanged code) and with the host compiler for the CPU emulator (csrc/emulation).
//   RSN_LAUNCH(grid, block, smem, stream, kernel<T, ...>)(args...);
//   RSN_EXTERN_SHARED(float, smem);   // extern __shared__ float smem[];
#pragma once

#ifdef RSN_FAST_CUDA_EMULATION
#include "emulation/cuda_emulation.h"
#else
#define RSN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define RSN_EXTERN_SHARED(type, name) extern __shared__ type name[]
#endif
