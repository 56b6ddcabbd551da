"""Loading the compiled extension ``rsn_fast._C``.

The package imports without it; only a request for a compiled (C++/CUDA) op needs it, and then the error says
how to build it.
"""

from __future__ import annotations

BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` from the repository root "
    "(set RSN_FAST_SKIP_CUDA_BUILD=1 to build the CPU part only); see README.md"
)


# Module globals, not functools.lru_cache: torch.compile traces these helpers (backend choice) and warns about
# lru_cache wrappers, which it does not honour. The extension's facts are read once, at load, into plain Python
# values: dynamo cannot trace a call into the pybind module, so the helpers below must not make one.
_LOADED: tuple | None = None
_HAS_CUDA = False
_ARCHS: list[str] = []
_EMULATION = False

ASAN_HINT = (
    'run Python with ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$(g++ -print-file-name=libasan.so) '
    '$(g++ -print-file-name=libstdc++.so)" (csrc/emulation/README.md), or rebuild without RSN_FAST_EMULATION_ASAN'
)


def _needs_missing_asan_runtime() -> bool:
    """Whether ``rsn_fast._C`` links AddressSanitizer while this process has no ASan runtime loaded.

    An ASan-linked library loaded into a process whose first library is not libasan aborts the interpreter
    ("ASan runtime does not come first"), which no ``except`` can catch: look before importing.
    """
    import importlib.util
    import mmap

    try:
        spec = importlib.util.find_spec("rsn_fast._C")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".so"):
        return False
    try:
        with open(spec.origin, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(b"libasan.so") < 0:  # the DT_NEEDED entry -fsanitize=address adds
                return False
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "libasan" not in maps.read()
    except OSError:
        return False


def load_extension():
    """Import ``rsn_fast._C`` once. Returns (module or None, error message or None)."""
    global _LOADED, _HAS_CUDA, _ARCHS, _EMULATION
    if _LOADED is None:
        if _needs_missing_asan_runtime():
            _LOADED = (None, f"ImportError: rsn_fast._C is an AddressSanitizer build; {ASAN_HINT}")
            return _LOADED
        try:
            import torch  # noqa: F401  (_C links against libc10/libtorch, which torch's import loads)

            from rsn_fast import _C  # noqa: F401  (registers torch.ops.rsn_fast.*)

            _HAS_CUDA = bool(getattr(_C, "with_cuda", lambda: False)())
            _ARCHS = [a for a in getattr(_C, "cuda_archs", lambda: "")().split(";") if a]
            _EMULATION = bool(getattr(_C, "is_emulation", lambda: False)())
            _LOADED = (_C, None)
        except Exception as e:  # ImportError, or an undefined symbol from a torch mismatch
            _LOADED = (None, f"{type(e).__name__}: {e}")
    return _LOADED


def extension_available() -> bool:
    return load_extension()[0] is not None


def require_extension():
    """The loaded extension, or a RuntimeError that explains how to build it."""
    mod, err = load_extension()
    if mod is None:
        hint = "" if "AddressSanitizer" in (err or "") else f"; {BUILD_HINT}"
        raise RuntimeError(f"rsn_fast._C is not available ({err}){hint}")
    return mod


def extension_cuda_archs() -> list[str]:
    """The CUDA archs the extension was compiled for ([] when it was built without CUDA)."""
    load_extension()
    return list(_ARCHS)


def extension_has_cuda() -> bool:
    load_extension()
    return _HAS_CUDA


def extension_is_emulation() -> bool:
    """Whether the extension's CUDA kernels run on the CPU emulator (built with RSN_FAST_CUDA_EMULATION=1).

    The ``cuda`` backend then takes CPU tensors; automatic dispatch never picks it (csrc/emulation/README.md).
    """
    load_extension()
    return _EMULATION
