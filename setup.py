"""Builds the compiled extension ``rsn_fast._C`` from ``csrc/`` (project metadata lives in pyproject.toml).

C++ sources (``csrc/**/*.cpp``) are always compiled; CUDA sources (``csrc/**/*.cu``) when torch is a CUDA
build and a CUDA toolkit is found; otherwise the reason is printed. ``csrc/tests`` holds C++ tests for CMake.

Environment:
    RSN_FAST_SKIP_CUDA_BUILD=1   build the C++ (CPU) part only.
    TORCH_CUDA_ARCH_LIST         archs to compile for; default: the visible GPUs, else "7.5;8.0;9.0"
                                 ("7.0;8.0;9.0" with nvcc < 13, which still supports Volta).
    CUDA_HOME / CUDA_PATH        the CUDA toolkit; default /usr/local/cuda, then the toolkit of nvcc on PATH.
    MAX_JOBS                     parallel compile jobs (ninja).

Install: ``pip install torch setuptools wheel ninja pybind11 && pip install --no-build-isolation -e .``
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def log(msg: str) -> None:
    print(f"[rsn_fast setup] {msg}", file=sys.stderr, flush=True)


def _is_toolkit(home: Path) -> bool:
    """A CUDA toolkit has bin/nvcc and the runtime library the link needs."""
    if not (home / "bin" / "nvcc").is_file():
        return False
    libs = glob.glob(str(home / "lib64" / "libcudart*")) + glob.glob(
        str(home / "targets" / "*" / "lib" / "libcudart*")
    )
    return bool(libs)


def standard_locations() -> list[Path]:
    """/usr/local/cuda, then versioned installs, newest first."""
    versioned = sorted(glob.glob("/usr/local/cuda-*"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    return [Path("/usr/local/cuda")] + [Path(p) for p in reversed(versioned)]


def sources() -> tuple[list[str], list[str]]:
    """(C++ sources, CUDA sources) relative to the repository root. csrc/tests is for CMake/ctest only."""

    def rel(paths):
        return sorted(str(Path(p).relative_to(ROOT)) for p in paths)

    cpp = rel(p for p in CSRC.rglob("*.cpp") if "tests" not in p.relative_to(CSRC).parts)
    return cpp, rel(CSRC.rglob("*.cu"))


def find_cuda_home() -> tuple[Path | None, str]:
    """The CUDA toolkit to build with, or None and why not.

    An explicit CUDA_HOME/CUDA_PATH must be a real toolkit (else we stop with an error). torch's own guess
    (dirname of dirname of `which nvcc`) is wrong when nvcc on PATH is a wrapper script, and the link then fails
    late with `cannot find -lcudart`, so the standard location comes before the PATH.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            home = Path(value)
            if not _is_toolkit(home):
                sys.exit(
                    f"[rsn_fast setup] error: {var}={value} is not a CUDA toolkit (need bin/nvcc and "
                    "lib64/libcudart* or targets/*/lib/libcudart*). Fix it, unset it, or set "
                    "RSN_FAST_SKIP_CUDA_BUILD=1 to build the CPU part only."
                )
            return home, f"{var}={value}"
    for home in standard_locations():
        if _is_toolkit(home):
            return home, f"found at {home}"
    nvcc = shutil.which("nvcc")
    if nvcc:
        for home in (Path(nvcc).resolve().parent.parent, Path(nvcc).parent.parent):
            if _is_toolkit(home):
                return home, f"toolkit of {nvcc}"
        sys.exit(
            f"[rsn_fast setup] error: nvcc is on PATH ({nvcc}) but no CUDA toolkit was found (looked for bin/nvcc "
            "and lib64/libcudart* under CUDA_HOME, /usr/local/cuda, /usr/local/cuda-*, and next to nvcc). "
            "Set CUDA_HOME to the toolkit, or RSN_FAST_SKIP_CUDA_BUILD=1 to build the CPU part only."
        )
    return None, "no CUDA toolkit found (no CUDA_HOME, no /usr/local/cuda, no nvcc on PATH)"


def nvcc_version(home: Path) -> tuple[int, int]:
    out = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        sys.exit(f"[rsn_fast setup] error: cannot read the version of {home / 'bin' / 'nvcc'}:\n{out}")
    return int(m.group(1)), int(m.group(2))


def choose_archs(torch, version: tuple[int, int]) -> str:
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{a}.{b}" for a, b in caps)
    # nvcc 13 dropped sm_70; 7.5 is then the oldest arch, and compiling for it catches Ampere-only code.
    return "7.5;8.0;9.0" if version >= (13, 0) else "7.0;8.0;9.0"


def cuda_plan(torch) -> tuple[Path | None, str | None]:
    """(toolkit, arch list) for a CUDA build, or (None, None) after printing why CUDA is skipped."""
    if os.environ.get("RSN_FAST_SKIP_CUDA_BUILD", "0") not in ("", "0"):
        log("skipping the CUDA sources: RSN_FAST_SKIP_CUDA_BUILD is set")
        return None, None
    if torch.version.cuda is None:
        log(f"skipping the CUDA sources: torch {torch.__version__} is not a CUDA build")
        return None, None
    home, why = find_cuda_home()
    if home is None:
        log(f"skipping the CUDA sources: {why}")
        return None, None
    version = nvcc_version(home)
    archs = choose_archs(torch, version)
    log(
        f"CUDA toolkit {home} ({why}), nvcc {version[0]}.{version[1]}, torch CUDA {torch.version.cuda}, "
        f"archs {archs}"
    )
    return home, archs


def extensions():
    try:
        import torch
    except ImportError:
        sys.exit(
            "[rsn_fast setup] error: building rsn_fast needs torch installed first: "
            "pip install torch setuptools wheel ninja pybind11 && pip install --no-build-isolation -e ."
        )

    home, archs = cuda_plan(torch)
    if home is not None:
        # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once, at import time.
        os.environ["CUDA_HOME"] = str(home)
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    from torch.utils import cpp_extension

    if home is not None:
        cpp_extension.CUDA_HOME = str(home)

    cpp, cu = sources()
    cxx_flags = ["-O3"]
    macros = []
    kwargs = dict(name="rsn_fast._C", include_dirs=[str(CSRC)], define_macros=macros)
    if home is not None:
        macros.append(("RSN_FAST_WITH_CUDA", None))
        # '_' for ';' so the value survives the shell that ninja runs; module.cpp turns it back.
        macros.append(("RSN_FAST_CUDA_ARCHS", archs.replace(";", "_").replace(" ", "_")))
        nvcc_flags = ["-O3", "-lineinfo"]
        log(f"compiling {len(cpp)} C++ and {len(cu)} CUDA sources")
        ext = cpp_extension.CUDAExtension(
            sources=cpp + cu, extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, **kwargs
        )
    else:
        log(f"compiling {len(cpp)} C++ sources (CPU only)")
        ext = cpp_extension.CppExtension(sources=cpp, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    if "MAX_JOBS" in os.environ:
        log(f"MAX_JOBS={os.environ['MAX_JOBS']}")
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}
    return [ext], cmdclass


if __name__ == "__main__":  # pip's build backend runs this file as __main__; tests import it
    # Metadata-only pip steps (egg_info, dist_info) run without torch; only the build needs it.
    building = not any(a in sys.argv for a in ("egg_info", "dist_info", "--version", "--name", "clean"))
    ext_modules, cmdclass = extensions() if building else ([], {})
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
