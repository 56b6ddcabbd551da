// The Python module rsn_fast._C. Importing it runs the TORCH_LIBRARY registrations of every op (torch.ops.rsn_fast.*);
// the functions here only describe the build. Not part of the CMake build (which needs no Python).
// pybind11 alone, not torch/extension.h: the module defines no tensor functions, and this compiles ~6x faster.
#include <pybind11/pybind11.h>

#include <string>

#ifdef RSN_FAST_CUDA_EMULATION
#include <pybind11/stl.h>

#include "emulation/emulator.h"

namespace rsn_fast {
std::vector<float> emulation_selftest(const std::string& name);  // csrc/emulation/selftest.cu
}
#endif

// Stringify the arch list passed by setup.py as a pp-number with '_' for ';' (a ';' would not survive the shell).
#define RSN_FAST_STR_(x) #x
#define RSN_FAST_STR(x) RSN_FAST_STR_(x)

namespace {

bool with_cuda() {
#ifdef RSN_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_archs() {
#if defined(RSN_FAST_WITH_CUDA) && defined(RSN_FAST_CUDA_ARCHS)
  std::string s = RSN_FAST_STR(RSN_FAST_CUDA_ARCHS);
  for (auto& ch : s) {
    if (ch == '_') ch = ';';
  }
  return s;
#else
  return "";
#endif
}

bool is_emulation() {
#ifdef RSN_FAST_CUDA_EMULATION
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {  // NOLINT
  m.doc() = "rsn_fast compiled ops (registered as torch.ops.rsn_fast.*)";
  m.def("with_cuda", &with_cuda, "Whether the CUDA kernels were compiled in.");
  m.def("cuda_archs", &cuda_archs, "The CUDA archs compiled for, e.g. '7.5;8.0;9.0' ('' without CUDA).");
  m.def("is_emulation", &is_emulation, "Whether the CUDA kernels run on the CPU emulator (csrc/emulation).");
#ifdef RSN_FAST_CUDA_EMULATION
  m.def(
      "emulation_launches",
      [] {
        pybind11::list out;
        for (const auto& r : rsn_emu::launches()) {
          pybind11::dict d;
          d["kernel"] = r.kernel;
          d["file"] = r.file;
          d["line"] = r.line;
          d["grid"] = pybind11::make_tuple(r.grid[0], r.grid[1], r.grid[2]);
          d["block"] = pybind11::make_tuple(r.block[0], r.block[1], r.block[2]);
          d["dynamic_smem"] = r.dynamic_smem;
          d["static_smem"] = r.static_smem;
          out.append(d);
        }
        return out;
      },
      "The recent emulated launches, oldest first: dicts of kernel, file, line, grid, block, shared memory.");
  m.def("emulation_clear_launches", &rsn_emu::clear_launches, "Forgets the recorded launches.");
  m.def(
      "emulation_asan",
      [] {
#if defined(__SANITIZE_ADDRESS__)
        return true;
#else
        return false;
#endif
      },
      "Whether this emulation build has AddressSanitizer (RSN_FAST_EMULATION_ASAN=1).");
  m.def("emulation_selftest", &rsn_fast::emulation_selftest,
        "Runs one rule-breaking kernel of csrc/emulation/selftest.cu (tests show the emulator catches it).");
#endif
}
