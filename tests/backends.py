"""Where the ``cuda`` backend runs in this test session: on a GPU, or on CPU tensors under a CUDA emulation build
of rsn_fast._C (``RSN_FAST_CUDA_EMULATION=1``, csrc/emulation). Tests take their CUDA device from here."""

from __future__ import annotations

import pytest
import torch

from rsn_fast import _ext

EMULATION = _ext.extension_is_emulation()
# The device of the cuda backend's tensors: the emulated GPU works on host memory.
CUDA_DEVICE = "cpu" if EMULATION else "cuda"
HAS_CUDA_BACKEND = EMULATION or (torch.cuda.is_available() and _ext.extension_has_cuda())
CUDA_SKIP_REASON = "needs a CUDA GPU and rsn_fast._C built with CUDA, or the CUDA emulation build"
needs_cuda_backend = pytest.mark.skipif(not HAS_CUDA_BACKEND, reason=CUDA_SKIP_REASON)


def emulated_launches() -> list[dict]:
    """The emulator's recent launches (kernel, file, line, grid, block, shared memory); [] on a real GPU."""
    return list(_ext.require_extension().emulation_launches()) if EMULATION else []


def clear_emulated_launches() -> None:
    if EMULATION:
        _ext.require_extension().emulation_clear_launches()
