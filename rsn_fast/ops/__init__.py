"""Fused ops with reference, Triton, CUDA (and where useful C++ CPU) backends. See STYLE.md.

The public functions, one name each (the README's op table uses the same names)::

    from rsn_fast.ops import (bn_add_relu, conv_bnact_stats, decode_heatmaps, depthwise_conv2d,
                              gaussian_targets, megvii_targets, prm_spatial_gate, rsb_epilogue)

``rsn_fast.ops.<name>`` is the function; its package stays importable as ``rsn_fast.ops.<name>.…`` (for example
``from rsn_fast.ops.depthwise_conv2d import check_inputs``). The PRM gate's package is ``rsn_fast.ops.prm_gate``
(kept for existing imports), the RSB ops' is ``rsn_fast.ops.rsb``. While a model is exported (ONNX,
torch.export, torch.jit.trace) every op runs its pure-torch reference, so the exported graph holds standard
operators only (:mod:`rsn_fast.ops._export`).
"""

from rsn_fast.ops._dispatch import BackendError
from rsn_fast.ops._export import exporting
from rsn_fast.ops.bn_add_relu import bn_add_relu
from rsn_fast.ops.decode_heatmaps import decode_heatmaps
from rsn_fast.ops.depthwise_conv2d import depthwise_conv2d
from rsn_fast.ops.gaussian_targets import gaussian_targets
from rsn_fast.ops.megvii_targets import megvii_targets
from rsn_fast.ops.prm_gate import prm_spatial_gate
from rsn_fast.ops.rsb import conv_bnact_stats, rsb_epilogue

__all__ = [
    "BackendError",
    "bn_add_relu",
    "conv_bnact_stats",
    "decode_heatmaps",
    "depthwise_conv2d",
    "exporting",
    "gaussian_targets",
    "megvii_targets",
    "prm_spatial_gate",
    "rsb_epilogue",
]
