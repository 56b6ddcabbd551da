"""Fused ops with reference, Triton, CUDA (and where useful C++ CPU) backends. See STYLE.md."""

from rsn_fast.ops._dispatch import BackendError

__all__ = ["BackendError"]
