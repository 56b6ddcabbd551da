"""Export mode: while a model is being exported, every rsn_fast op runs as its pure-torch reference.

``torch.onnx.export`` (dynamo and TorchScript exporters), ``torch.export.export`` and ``torch.jit.trace`` record
the operators a forward pass calls. Our ``torch.ops.rsn_fast.*`` custom ops have no ONNX translation and tie a
TorchScript or ExportedProgram file to this package, so under export each public op function (and the
backend :class:`~rsn_fast.ops._dispatch.Dispatcher`) switches to the reference, which is made of standard
operators: the depthwise op becomes a grouped ``Conv``, the fused RSB blocks and the PRM gate become the
conv / BatchNorm / elementwise graph they compute. The reference is the specification the kernels are tested
against, so the exported graph computes the same function.

For graphs that already hold a raw ``rsn_fast::depthwise_conv2d`` call (``torch.ops.rsn_fast.depthwise_conv2d``
used directly), :func:`onnx_translation_table` (dynamo exporter) and :func:`register_torchscript_symbolics`
(TorchScript exporter) translate it to a grouped ``Conv``.
"""

from __future__ import annotations

import torch

__all__ = ["exporting", "onnx_translation_table", "register_torchscript_symbolics"]


def exporting() -> bool:
    """True while torch.export / torch.onnx.export / torch.jit.trace records the running forward pass."""
    if torch.compiler.is_exporting():
        return True
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    return bool(torch.onnx.is_in_onnx_export())


def onnx_translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: raw rsn_fast ops → ONNX.

    Needs onnxscript (the dynamo exporter needs it anyway).
    """
    import onnxscript
    from onnxscript import opset18 as op

    def depthwise(x, weight, bias=None, padding: int = 0, backend: str = ""):
        # group = C: the weight's first dimension (C, 1, k, k)
        group = weight.shape[0] if hasattr(weight, "shape") and weight.shape is not None else None
        if group is None or not isinstance(group, int):
            raise RuntimeError("rsn_fast::depthwise_conv2d export needs a static channel count")
        pads = [padding] * 4
        if bias is None:
            return op.Conv(x, weight, group=group, pads=pads)
        return op.Conv(x, weight, bias, group=group, pads=pads)

    del onnxscript  # imported for the error when it is missing
    return {torch.ops.rsn_fast.depthwise_conv2d.default: depthwise}


_SYMBOLICS_REGISTERED = False


def register_torchscript_symbolics(opset: int = 17) -> None:
    """Teach the TorchScript ONNX exporter (``dynamo=False``) the raw ``rsn_fast::depthwise_conv2d`` op."""
    global _SYMBOLICS_REGISTERED
    if _SYMBOLICS_REGISTERED:
        return
    from torch.onnx import symbolic_helper as sym

    def depthwise(g, x, weight, bias, padding, backend):
        k = sym._get_tensor_sizes(weight)
        pad = sym._maybe_get_const(padding, "i")
        args = [x, weight] if sym._is_none(bias) else [x, weight, bias]
        return g.op("Conv", *args, group_i=k[0], pads_i=[pad] * 4, kernel_shape_i=k[2:], strides_i=[1, 1])

    torch.onnx.register_custom_op_symbolic("rsn_fast::depthwise_conv2d", depthwise, opset)
    _SYMBOLICS_REGISTERED = True
