"""The "cuda" backend of the RSB ops: cuDNN convolutions with our csrc/rsb kernels around them (any CUDA GPU,
V100 included).

Forward of :func:`rsn_fast.ops.rsb.conv_bnact_stats`: one prologue kernel (producer BN scale/shift + ReLU +
step sum or concat of up to four sources, read in place) → ``F.conv2d`` (cuDNN) → one statistics kernel
(per-channel sum and sum of squares, per-block partials reduced in a fixed order: deterministic).
Backward: one kernel folds the statistics' gradients into dz (``g = dz + dsum + 2 z dsumsq``), cuDNN's
convolution backward, then one kernel applies the ReLU mask, the affine and the sum's fan-out for every source
and reduces d scale / d shift, in a single pass over du.
Final epilogue (:func:`rsn_fast.ops.rsb.rsb_epilogue`): one kernel forward, one backward.

Importing this needs no extension; calling it does. Math: :mod:`rsn_fast.ops.rsb.reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rsn_fast import _ext
from rsn_fast.ops.rsb.reference import channels_last_like

# the op whose presence says the extension has these kernels (dispatch reasons)
PROBE_OP = "rsb_prologue_cuda"


def _ops():
    _ext.require_extension()
    return torch.ops.rsn_fast


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float().contiguous()


def identity_prologue(srcs, scale, relu) -> bool:
    """The conv input is the single source itself (no affine, no ReLU, no sum)."""
    return len(srcs) == 1 and scale is None and not relu


def prologue(srcs, scale, shift, relu, cat, dtype):
    """The conv input u (dense, the first source's layout) in ``dtype``."""
    srcs = [s.to(dtype) for s in srcs]
    cl = channels_last_like(srcs[0])
    if identity_prologue(srcs, scale, relu):
        return srcs[0].contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    return _ops().rsb_prologue_cuda(srcs, _f32(scale), _f32(shift), relu, cat, cl)


def conv_bnact_stats_forward(srcs, scale, shift, weight, bias, stride, padding, relu, cat, stats):
    """Same contract as :func:`rsn_fast.ops.rsb.reference.conv_bnact_stats_forward`."""
    u = prologue(srcs, scale, shift, relu, cat, weight.dtype)
    z = F.conv2d(u, weight, bias, stride=stride, padding=padding)
    if stats:
        st = _ops().rsb_channel_stats_cuda(z)
        return z, st[0].float(), st[1].float()
    empty = z.new_empty((0,), dtype=torch.float32)
    return z, empty, empty.clone()


def _grad_or_none(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None or t.numel() == 0 else t.float()


def conv_bnact_stats_backward(
    grad_z, grad_sum, grad_sumsq, z, srcs, scale, shift, weight, has_bias, stride, padding, relu, cat, u=None
):
    """Same contract as :func:`rsn_fast.ops.rsb.reference.conv_bnact_stats_backward`."""
    ops = _ops()
    c = z.shape[1]
    g = ops.rsb_grad_fold_cuda(grad_z, _grad_or_none(grad_sum), _grad_or_none(grad_sumsq), z)
    if u is None:
        u = prologue(srcs, scale, shift, relu, cat, weight.dtype)
    du, dw, db = torch.ops.aten.convolution_backward(
        g, u, weight, [c] if has_bias else None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
        [True, True, has_bias],
    )  # fmt: skip
    if identity_prologue(srcs, scale, relu):
        return [du.to(srcs[0].dtype)], None, None, dw, db if has_bias else None
    wsrcs = [s.to(weight.dtype) for s in srcs]
    dsrcs, sums = ops.rsb_prologue_bwd_cuda(du.to(weight.dtype), wsrcs, _f32(scale), _f32(shift), relu, cat)
    dsrcs = [d.to(s.dtype) for d, s in zip(dsrcs, srcs)]
    dscale = sums[0].to(scale.dtype) if scale is not None else None
    dshift = sums[1].to(shift.dtype) if shift is not None else None
    return dsrcs, dscale, dshift, dw, db if has_bias else None


def epilogue_forward(z, scale, shift, r, r_scale, r_shift):
    """out = relu(z * scale + shift + (r * r_scale + r_shift, or r)), z's dtype and layout."""
    return _ops().rsb_epilogue_cuda(z, _f32(scale), _f32(shift), r.to(z.dtype), _f32(r_scale), _f32(r_shift))


def epilogue_backward(grad, out, z, r, scale, r_scale):
    """(dz, dr, sums float64 (3, C) of m * z, m, m * r) with m = grad * [out > 0]."""
    return _ops().rsb_epilogue_bwd_cuda(grad, out, z, r.to(z.dtype), _f32(scale), _f32(r_scale))
