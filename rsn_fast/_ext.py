"""Loading the compiled extension ``rsn_fast._C``.

The package imports without it; only a request for a compiled (C++/CUDA) op needs it, and then the error says
how to build it.
"""

from __future__ import annotations

BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` from the repository root "
    "(set RSN_FAST_SKIP_CUDA_BUILD=1 to build the CPU part only); see README.md"
)


# A module global, not functools.lru_cache: torch.compile traces these helpers (backend choice) and warns about
# lru_cache wrappers, which it does not honour.
_LOADED: tuple | None = None


def load_extension():
    """Import ``rsn_fast._C`` once. Returns (module or None, error message or None)."""
    global _LOADED
    if _LOADED is None:
        try:
            import torch  # noqa: F401  (_C links against libc10/libtorch, which torch's import loads)

            from rsn_fast import _C  # noqa: F401  (registers torch.ops.rsn_fast.*)

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
        raise RuntimeError(f"rsn_fast._C is not available ({err}); {BUILD_HINT}")
    return mod


def extension_cuda_archs() -> list[str]:
    """The CUDA archs the extension was compiled for ([] when it was built without CUDA)."""
    mod, _ = load_extension()
    if mod is None or not hasattr(mod, "cuda_archs"):
        return []
    return [a for a in mod.cuda_archs().split(";") if a]


def extension_has_cuda() -> bool:
    mod, _ = load_extension()
    return bool(mod is not None and getattr(mod, "with_cuda", lambda: False)())
