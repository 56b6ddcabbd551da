"""Fused PRM spatial gate: out = o1 ⊙ (1 + o2 ⊙ sigmoid(ReLU(BN_p(pw(ReLU(BN_d(dw(u))))))))  (reference.py).

Public function :func:`prm_spatial_gate`. Backends: ``reference`` (torch, anywhere), ``triton`` (fused phases,
forward and backward; CUDA cc >= 8.0 or CPU under TRITON_INTERPRET=1), ``cuda`` (the same phases as CUDA kernels
from csrc/prm_gate and csrc/depthwise_conv2d; any GPU the extension was built for, Volta included).
Automatic order: triton, cuda, reference (Triton first until the GPU benchmarks say which fused path is faster;
Volta/Turing, where Triton cannot run, get the CUDA kernels).
Both fused paths are the op ``torch.ops.rsn_fast.prm_gate_fwd`` (fake + autograd registered) over the phase
orchestration in fused.py; running statistics are updated outside it with plain torch ops, exactly as
nn.BatchNorm2d does.
"""

from __future__ import annotations

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cuda_reasons, register, triton_reasons
from rsn_fast.ops.prm_gate import cuda as _cuda
from rsn_fast.ops.prm_gate import fused as _fused
from rsn_fast.ops.prm_gate import reference as _reference

__all__ = ["prm_spatial_gate", "DISPATCHER"]

OP = "prm_spatial_gate"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _fmt(t: torch.Tensor) -> torch.memory_format:
    cl = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


def _check(o1, o2, u, dw_weight, vec_c: dict, pw_weight, vec_1: dict, training: bool) -> None:
    for name, t in (("o1", o1), ("o2", o2), ("u", u), ("dw_weight", dw_weight), ("pw_weight", pw_weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: argument '{name}' must be a Tensor, got {type(t).__name__}")
    if u.dim() != 4:
        raise ValueError(f"{OP}: argument 'u' must be 4-D (N, C, H, W), got shape {tuple(u.shape)}")
    if u.dtype not in DTYPES + (torch.float64,):
        raise TypeError(f"{OP}: argument 'u' must be float16, bfloat16, float32 or float64, got {u.dtype}")
    N, C, H, W = u.shape
    if o1.shape != u.shape:
        raise ValueError(f"{OP}: argument 'o1' must have u's shape {tuple(u.shape)}, got {tuple(o1.shape)}")
    if o2.shape != (N, C, 1, 1):
        raise ValueError(f"{OP}: argument 'o2' must have shape {(N, C, 1, 1)}, got {tuple(o2.shape)}")
    k = dw_weight.shape[-1] if dw_weight.dim() == 4 else 0
    if dw_weight.shape != (C, 1, k, k) or k % 2 == 0 or not 3 <= k <= 31:
        raise ValueError(f"{OP}: argument 'dw_weight' must have shape ({C}, 1, k, k), k odd in [3, 31], got "
                         f"{tuple(dw_weight.shape)}")  # fmt: skip
    if pw_weight.shape != (1, C, 1, 1):
        raise ValueError(
            f"{OP}: argument 'pw_weight' must have shape (1, {C}, 1, 1), got {tuple(pw_weight.shape)}"
        )
    for shape, group in (((C,), vec_c), ((1,), vec_1)):
        for name, t in group.items():
            if not isinstance(t, torch.Tensor) or t.shape != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{OP}: argument '{name}' must have shape {shape}, got {got}")
    for name, t in [("o1", o1), ("o2", o2), ("dw_weight", dw_weight), ("pw_weight", pw_weight)]:
        if t.dtype != u.dtype:
            raise TypeError(f"{OP}: argument '{name}' has dtype {t.dtype} but 'u' has {u.dtype}")
    for name, t in [("o1", o1), ("o2", o2), ("dw_weight", dw_weight), ("pw_weight", pw_weight)] + [
        *vec_c.items(),
        *vec_1.items(),
    ]:
        if t.device != u.device:
            raise ValueError(f"{OP}: argument '{name}' is on {t.device} but 'u' is on {u.device}")
    if training and N * H * W < 2:
        raise ValueError(f"{OP}: argument 'u' needs more than 1 value per channel in training mode")


def _triton_reasons(o1, o2, u, *args, **kwargs) -> list[str]:
    why = triton_reasons([o1, o2, u])
    if u.dtype not in DTYPES:
        why.append(f"dtype {u.dtype} not supported")
    return why


def _cuda_reasons(o1, o2, u, *args, **kwargs) -> list[str]:
    why = cuda_reasons([o1, o2, u], _cuda.PROBE_OP)
    if u.dtype not in DTYPES:
        why.append(f"dtype {u.dtype} not supported")
    return why


DISPATCHER = register(
    Dispatcher(
        OP,
        [
            Backend("cuda", None, _cuda_reasons),
            Backend("triton", None, _triton_reasons),
            Backend("reference", _reference.prm_spatial_gate, lambda *a, **k: []),
        ],
        # Triton first: its fused path is the one measured so far; revisit when the GPU benchmarks compare both
        auto_order=("triton", "cuda", "reference"),
    ),
    lambda device: (
        torch.randn(2, 8, 16, 12, device=device),
        torch.rand(2, 8, 1, 1, device=device),
        torch.randn(2, 8, 16, 12, device=device),
    ),
)


@torch.library.custom_op("rsn_fast::prm_gate_fwd", mutates_args=())
def _prm_gate_fwd(
    o1: torch.Tensor,
    o2: torch.Tensor,
    u: torch.Tensor,
    dw_weight: torch.Tensor,
    bn_d_weight: torch.Tensor,
    bn_d_bias: torch.Tensor,
    bn_d_running_mean: torch.Tensor,
    bn_d_running_var: torch.Tensor,
    pw_weight: torch.Tensor,
    bn_p_weight: torch.Tensor,
    bn_p_bias: torch.Tensor,
    bn_p_running_mean: torch.Tensor,
    bn_p_running_var: torch.Tensor,
    training: bool,
    eps: float,
    need_saved: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _fused.forward(
        o1, o2, u, dw_weight, bn_d_weight, bn_d_bias, bn_d_running_mean, bn_d_running_var, pw_weight,
        bn_p_weight, bn_p_bias, bn_p_running_mean, bn_p_running_var, training, eps, need_saved, backend,
    )  # fmt: skip


@_prm_gate_fwd.register_fake
def _(
    o1, o2, u, dw_weight, gd, bd, rmd, rvd, pw_weight, gp, bp, rmp, rvp, training, eps, need_saved, backend
):
    N, C, H, W = u.shape
    out = torch.empty(o1.shape, dtype=o1.dtype, device=o1.device, memory_format=_fmt(o1))
    saved = training or need_saved
    z = (
        torch.empty(u.shape, dtype=u.dtype, device=u.device, memory_format=_fmt(u))
        if saved
        else u.new_empty((0,))
    )
    p = torch.empty((N, H * W) if saved else (0,), dtype=torch.float32, device=u.device)
    stats_d = torch.empty((3, C), dtype=torch.float32, device=u.device)
    stats_p = torch.empty((3,), dtype=torch.float32, device=u.device)
    return out, z, p, stats_d, stats_p


@torch.library.custom_op("rsn_fast::prm_gate_bwd", mutates_args=())
def _prm_gate_bwd(
    grad: torch.Tensor,
    o1: torch.Tensor,
    o2: torch.Tensor,
    u: torch.Tensor,
    dw_weight: torch.Tensor,
    bn_d_weight: torch.Tensor,
    bn_d_bias: torch.Tensor,
    pw_weight: torch.Tensor,
    bn_p_weight: torch.Tensor,
    bn_p_bias: torch.Tensor,
    z: torch.Tensor,
    p: torch.Tensor,
    stats_d: torch.Tensor,
    stats_p: torch.Tensor,
    training: bool,
    backend: str,
) -> list[torch.Tensor]:
    return list(
        _fused.backward(
            grad, o1, o2, u, dw_weight, bn_d_weight, bn_d_bias, pw_weight, bn_p_weight, bn_p_bias, z, p,
            stats_d, stats_p, training, backend,
        )
    )  # fmt: skip


@_prm_gate_bwd.register_fake
def _(grad, o1, o2, u, dw_weight, gd, bd, pw_weight, gp, bp, z, p, stats_d, stats_p, training, backend):
    return [
        torch.empty(o1.shape, dtype=o1.dtype, device=o1.device, memory_format=_fmt(o1)),
        torch.empty_like(o2, memory_format=torch.contiguous_format),
        torch.empty(u.shape, dtype=u.dtype, device=u.device, memory_format=_fmt(u)),
        torch.empty_like(dw_weight, memory_format=torch.contiguous_format),
        torch.empty_like(gd),
        torch.empty_like(bd),
        torch.empty_like(pw_weight, memory_format=torch.contiguous_format),
        torch.empty_like(gp),
        torch.empty_like(bp),
    ]


def _setup_context(ctx, inputs, output):
    o1, o2, u, dw_weight, gd, bd, _, _, pw_weight, gp, bp, _, _, training, _, _, backend = inputs
    _, z, p, stats_d, stats_p = output
    ctx.save_for_backward(o1, o2, u, dw_weight, gd, bd, pw_weight, gp, bp, z, p, stats_d, stats_p)
    ctx.training = training
    ctx.backend = backend


def _backward(ctx, grad_out, *unused):
    o1, o2, u, dw_weight, gd, bd, pw_weight, gp, bp, z, p, stats_d, stats_p = ctx.saved_tensors
    if z.numel() == 0:
        raise RuntimeError(f"{OP}: backward through a forward run with need_saved=False")
    g = torch.ops.rsn_fast.prm_gate_bwd(
        grad_out,
        o1,
        o2,
        u,
        dw_weight,
        gd,
        bd,
        pw_weight,
        gp,
        bp,
        z,
        p,
        stats_d,
        stats_p,
        ctx.training,
        ctx.backend,
    )
    do1, do2, du, d_dw, d_gd, d_bd, d_pw, d_gp, d_bp = g
    return do1, do2, du, d_dw, d_gd, d_bd, None, None, d_pw, d_gp, d_bp, None, None, None, None, None, None


_prm_gate_fwd.register_autograd(_backward, setup_context=_setup_context)


def _update_running(running: torch.Tensor, batch: torch.Tensor, momentum: float) -> None:
    with torch.no_grad():
        running.mul_(1.0 - momentum).add_(batch.to(running.dtype), alpha=momentum)


def prm_spatial_gate(
    o1: torch.Tensor,
    o2: torch.Tensor,
    u: torch.Tensor,
    dw_weight: torch.Tensor,
    bn_d_weight: torch.Tensor,
    bn_d_bias: torch.Tensor,
    bn_d_running_mean: torch.Tensor,
    bn_d_running_var: torch.Tensor,
    pw_weight: torch.Tensor,
    bn_p_weight: torch.Tensor,
    bn_p_bias: torch.Tensor,
    bn_p_running_mean: torch.Tensor,
    bn_p_running_var: torch.Tensor,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    backend: str | None = None,
) -> torch.Tensor:
    """The PRM spatial gate and combination, MMPose topology (spec 9.2, 16.8).

    Args:
        o1: (N, C, H, W) output of the PRM's 3×3 CBR; contiguous or channels-last.
        o2: (N, C, 1, 1) channel weights (the middle path's sigmoid).
        u: (N, C, H, W) output of the bottom path's 1×1 CBR (input of the depthwise conv).
        dw_weight: (C, 1, k, k) depthwise weight (no bias; k = 9 in RSN). bn_d_*: (C,) its BatchNorm.
        pw_weight: (1, C, 1, 1) pointwise weight (no bias). bn_p_*: (1,) its BatchNorm.
        training: batch statistics (and in-place running-stat updates, momentum like nn.BatchNorm2d) if True.
        momentum, eps: the BatchNorm settings (both BatchNorms share them, as MMPose's ConvModules do).
        backend: "cuda", "triton" or "reference"; default: RSN_FAST_BACKEND, then the first that can run.

    o2, dw_weight and pw_weight are cast to u's dtype when they differ (float32 weights under autocast); the
    BatchNorm parameters and buffers stay as they are (float32 in practice) and are used in float32.

    Returns:
        out (N, C, H, W) = o1 ⊙ (1 + o2 ⊙ β), β = sigmoid(ReLU(BN_p(pw(ReLU(BN_d(dw(u))))))) (N, 1, H, W).
    """
    vec_c = {
        "bn_d_weight": bn_d_weight,
        "bn_d_bias": bn_d_bias,
        "bn_d_running_mean": bn_d_running_mean,
        "bn_d_running_var": bn_d_running_var,
    }
    vec_1 = {
        "bn_p_weight": bn_p_weight,
        "bn_p_bias": bn_p_bias,
        "bn_p_running_mean": bn_p_running_mean,
        "bn_p_running_var": bn_p_running_var,
    }
    if isinstance(u, torch.Tensor) and u.is_floating_point():
        # mixed precision (autocast): float32 weights and channel weights compute in the activations' dtype
        o2, dw_weight, pw_weight = (
            t.to(u.dtype)
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != u.dtype
            else t
            for t in (o2, dw_weight, pw_weight)
        )
    _check(o1, o2, u, dw_weight, vec_c, pw_weight, vec_1, training)
    if momentum is None:
        raise ValueError(f"{OP}: argument 'momentum' must be a float (cumulative averaging is not supported)")
    args = (o1, o2, u, dw_weight, bn_d_weight, bn_d_bias, bn_d_running_mean, bn_d_running_var, pw_weight,
            bn_p_weight, bn_p_bias, bn_p_running_mean, bn_p_running_var)  # fmt: skip
    name = DISPATCHER.choose(*args[:3], backend=backend).name
    if name == "reference":
        return _reference.prm_spatial_gate(*args, training, momentum, eps)
    fix = [t if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last) else t.contiguous()
           for t in args[:3]]  # fmt: skip
    args = (*fix, *args[3:])
    need_saved = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    out, _, _, stats_d, stats_p = torch.ops.rsn_fast.prm_gate_fwd(*args, training, eps, need_saved, name)
    if training:
        _update_running(bn_d_running_mean, stats_d[0], momentum)
        _update_running(bn_d_running_var, stats_d[2], momentum)
        _update_running(bn_p_running_mean, stats_p[0:1], momentum)
        _update_running(bn_p_running_var, stats_p[2:3], momentum)
    return out
