// Plain C++ types shared between the torch-facing .cpp files and the torch-free .cu kernels.
#pragma once

#include <cstdint>

namespace rsn_fast {

// Element type of a tensor handed to a CUDA launcher (the .cu side cannot see at::ScalarType).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace rsn_fast
