"""Pure-torch specification of the fused RSB conv op (runs anywhere; the other backends must match it).

The op, ``conv_bnact_stats``, is one convolution with a fused *prologue* and *epilogue*:

* prologue (on load): each source tensor ``src_k`` (N, C_k, H, W) becomes ``act(src_k * scale_k + shift_k)``
  (per-channel affine = the producer's BatchNorm, ``act`` = ReLU or identity); the sources are then summed
  (``cat=False``, the RSB's step sums, all C_k equal) or concatenated along channels (``cat=True``, the input
  of the RSB's final 1x1 conv, so no concat buffer is materialised by the caller);
* the convolution ``z = conv2d(u, weight, bias, stride, padding)``;
* epilogue (on store): per-output-channel ``sum`` and ``sum of squares`` of ``z`` in float32 (the batch
  statistics of the BatchNorm that follows), when ``stats``.

``scale`` and ``shift`` are the per-source vectors concatenated in source order (length sum(C_k)), or None for
no affine. The gradient of the whole op, including through ``sum`` and ``sumsq``, is :func:`conv_bnact_stats_backward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "channels_last_like",
    "prologue",
    "conv_bnact_stats_forward",
    "conv_bnact_stats_backward",
    "fold_bn",
    "epilogue_forward",
    "epilogue_backward",
]


def channels_last_like(t: torch.Tensor) -> bool:
    """True for channels-last tensors and their channel slices (channel stride 1, more than one channel)."""
    return t.dim() == 4 and t.shape[1] > 1 and t.stride(1) == 1 and not t.is_contiguous()


def _acc(t: torch.Tensor) -> torch.Tensor:
    """t in the accumulation type: float32, or float64 for float64 inputs."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _affine_act(src: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, relu: bool):
    c = src.shape[1]
    v = _acc(src)
    if scale is not None:
        v = v * _acc(scale).view(1, c, 1, 1) + _acc(shift).view(1, c, 1, 1)
    return torch.relu(v) if relu else v


def _split(vec: torch.Tensor | None, srcs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    if vec is None:
        return [None] * len(srcs)
    return list(torch.split(vec, [s.shape[1] for s in srcs]))


def prologue(
    srcs: list[torch.Tensor],
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    relu: bool,
    cat: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The conv input u: sum or channel concat of act(src_k * scale_k + shift_k), computed in fp32, rounded once."""
    parts = [_affine_act(s, a, b, relu) for s, a, b in zip(srcs, _split(scale, srcs), _split(shift, srcs))]
    if cat:
        u = torch.cat(parts, dim=1)
    else:
        u = parts[0]
        for p in parts[1:]:
            u = u + p
    cl = channels_last_like(srcs[0])
    return u.to(dtype).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def conv_bnact_stats_forward(
    srcs: list[torch.Tensor],
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    relu: bool,
    cat: bool,
    stats: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (z (N, C_out, H', W') in the weight's dtype, sum (C_out,) fp32, sumsq (C_out,) fp32).

    sum/sumsq are empty tensors when ``stats`` is False.
    """
    u = prologue(srcs, scale, shift, relu, cat, weight.dtype)
    z = F.conv2d(u, weight, bias, stride=stride, padding=padding)
    if stats:
        zf = _acc(z)
        return z, zf.sum((0, 2, 3)), (zf * zf).sum((0, 2, 3))
    empty = z.new_empty((0,), dtype=torch.float32)
    return z, empty, empty.clone()


def conv_bnact_stats_backward(
    grad_z: torch.Tensor | None,
    grad_sum: torch.Tensor | None,
    grad_sumsq: torch.Tensor | None,
    z: torch.Tensor,
    srcs: list[torch.Tensor],
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    weight: torch.Tensor,
    has_bias: bool,
    stride: int,
    padding: int,
    relu: bool,
    cat: bool,
    u: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Gradients (d srcs, d scale, d shift, d weight, d bias) of :func:`conv_bnact_stats_forward`.

    The statistics' gradients fold into the conv output gradient, ``g = dz + dsum + 2 z dsumsq`` (this is the
    BatchNorm backward's reduction terms arriving through autograd), then one convolution backward, then the
    ReLU mask, the affine and the sum's fan-out per source. ``u`` is the saved conv input; None recomputes it.
    """
    c = z.shape[1]
    g = _acc(grad_z) if grad_z is not None else _acc(torch.zeros_like(z))
    if grad_sum is not None and grad_sum.numel():
        g = g + _acc(grad_sum).view(1, c, 1, 1)
    if grad_sumsq is not None and grad_sumsq.numel():
        g = g + 2.0 * _acc(z) * _acc(grad_sumsq).view(1, c, 1, 1)
    if u is None:
        u = prologue(srcs, scale, shift, relu, cat, weight.dtype)
    g = g.to(weight.dtype)
    du, dw, db = torch.ops.aten.convolution_backward(
        g,
        u,
        weight,
        [c] if has_bias else None,
        [stride] * 2,
        [padding] * 2,
        [1, 1],
        False,
        [0, 0],
        1,
        [True, True, has_bias],
    )
    du = _acc(du)
    dsrcs, dscales, dshifts = [], [], []
    offset = 0
    for s, a, b in zip(srcs, _split(scale, srcs), _split(shift, srcs)):
        cs = s.shape[1]
        d = du[:, offset : offset + cs] if cat else du
        offset += cs
        sf = _acc(s)
        if relu:
            pre = sf * _acc(a).view(1, cs, 1, 1) + _acc(b).view(1, cs, 1, 1) if a is not None else sf
            d = d * (pre > 0)
        if a is not None:
            dscales.append((d * sf).sum((0, 2, 3)))
            dshifts.append(d.sum((0, 2, 3)))
            d = d * _acc(a).view(1, cs, 1, 1)
        dsrcs.append(d.to(s.dtype))
    dscale = torch.cat(dscales).to(scale.dtype) if scale is not None else None
    dshift = torch.cat(dshifts).to(shift.dtype) if shift is not None else None
    return dsrcs, dscale, dshift, dw, db if has_bias else None


def _vec(v: torch.Tensor, c: int) -> torch.Tensor:
    return _acc(v).view(1, c, 1, 1)


def epilogue_forward(
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    r: torch.Tensor,
    r_scale: torch.Tensor | None,
    r_shift: torch.Tensor | None,
) -> torch.Tensor:
    """The RSB's final pass: ``relu(z * scale + shift + r')`` with ``r' = r * r_scale + r_shift`` (the
    downsample's BN) or ``r`` (identity), computed in fp32 (fp64 for fp64), rounded once to z's dtype and
    layout. z, r: (N, C, H, W); vectors (C,)."""
    c = z.shape[1]
    y = _acc(z) * _vec(scale, c) + _vec(shift, c)
    rr = _acc(r) if r_scale is None else _acc(r) * _vec(r_scale, c) + _vec(r_shift, c)
    fmt = torch.channels_last if channels_last_like(z) else torch.contiguous_format
    return torch.relu(y + rr).to(z.dtype).contiguous(memory_format=fmt)


def epilogue_backward(
    grad: torch.Tensor,
    out: torch.Tensor,
    z: torch.Tensor,
    r: torch.Tensor,
    scale: torch.Tensor,
    r_scale: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dz, dr in z's dtype, sums (3, C) of m * z, m, m * r) with ``m = grad * [out > 0]``: d scale, d shift
    (= d r_shift) and d r_scale are the three sums."""
    c = z.shape[1]
    m = _acc(grad) * (out > 0)
    dz = (m * _vec(scale, c)).to(z.dtype)
    dr = (m * _vec(r_scale, c) if r_scale is not None else m).to(z.dtype)
    sums = torch.stack([(m * _acc(z)).sum((0, 2, 3)), m.sum((0, 2, 3)), (m * _acc(r)).sum((0, 2, 3))])
    return dz, dr, sums


def fold_bn(
    weight: torch.Tensor,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    conv_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm folded into the preceding conv: returns (weight', bias') with
    ``conv(x, weight', bias') == bn(conv(x, weight, conv_bias))`` in eval mode. Computed in float32."""
    inv = torch.rsqrt(_acc(running_var) + eps)
    scale = inv * _acc(bn_weight) if bn_weight is not None else inv
    shift = -_acc(running_mean) * scale
    if bn_bias is not None:
        shift = shift + _acc(bn_bias)
    if conv_bias is not None:
        shift = shift + _acc(conv_bias) * scale
    w = _acc(weight) * scale.view(-1, 1, 1, 1)
    return w.to(weight.dtype), shift.to(weight.dtype)
