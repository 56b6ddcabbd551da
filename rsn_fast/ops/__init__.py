"""Fused ops with reference, Triton, CUDA (and where useful C++ CPU) backends. See STYLE.md."""

from rsn_fast.ops._dispatch import BackendError
from rsn_fast.ops.bn_add_relu import bn_add_relu  # noqa: F401
from rsn_fast.ops.decode_heatmaps import decode_heatmaps  # noqa: F401
from rsn_fast.ops.megvii_targets import megvii_targets  # noqa: F401

__all__ = ["BackendError"]
