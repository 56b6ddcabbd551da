"""Fused convolution of the RSB: prologue (producer BN + ReLU + step sum / concat) → conv → epilogue (BN stats).

Public function: :func:`conv_bnact_stats` (math in :mod:`rsn_fast.ops.rsb.reference`). Backends:

* ``reference``: pure torch (any device), the specification.
* ``triton``: one implicit-GEMM kernel over NHWC per call (prologue on load, per-channel sum / sum of squares
  by atomics on store); CUDA with compute capability >= 8.0, or CPU under ``TRITON_INTERPRET=1``.
* ``cuda``: for V100 and any CUDA GPU: our csrc prologue kernel (affine + ReLU + sum in one pass) → cuDNN
  convolution (``F.conv2d``) → our csrc per-channel statistics kernel.

Registered as ``torch.ops.rsn_fast.rsb_conv_bnact_stats`` (custom_op + fake + autograd), so torch.compile
traces it. The backward folds the statistics' gradients into the conv output gradient (one kernel), runs one
convolution backward (torch: cuDNN on a GPU) and applies the ReLU mask / affine / sum fan-out for every source
with the d scale / d shift reductions in one pass (one kernel): Triton kernels (triton_eltwise.py) for
``triton``, csrc kernels for ``cuda``, torch ops for ``reference``.

:func:`rsb_epilogue` (``torch.ops.rsn_fast.rsb_epilogue``): the block's final BN3 + downsample BN (or identity)
+ residual add + ReLU, one kernel forward and one backward, same three backends.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cuda_reasons, register, triton_reasons
from rsn_fast.ops._export import exporting
from rsn_fast.ops.rsb import reference as _reference
from rsn_fast.ops.rsb.reference import fold_bn

__all__ = ["conv_bnact_stats", "rsb_epilogue", "fold_bn", "DISPATCHER", "EPILOGUE_DISPATCHER"]

OP = "rsb_conv_bnact_stats"
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _triton_module() -> ModuleType:
    # lazily: `import rsn_fast` must not need triton
    return importlib.import_module("rsn_fast.ops.rsb.triton")


def _cuda_module() -> ModuleType:
    return importlib.import_module("rsn_fast.ops.rsb.cuda")


def _eltwise_module() -> ModuleType:
    return importlib.import_module("rsn_fast.ops.rsb.triton_eltwise")


def _backend_module(backend: str) -> ModuleType:
    """Module with conv_bnact_stats_backward, epilogue_forward and epilogue_backward for ``backend``."""
    if backend == "reference":
        return _reference
    if backend == "triton":
        return _eltwise_module()
    if backend == "cuda":
        return _cuda_module()
    raise ValueError(f"rsn_fast.ops.rsb: unknown backend {backend!r}")


def _forward_impl(backend: str):
    if backend == "reference":
        return _reference.conv_bnact_stats_forward
    if backend == "triton":
        return _triton_module().conv_bnact_stats_forward
    if backend == "cuda":
        return _cuda_module().conv_bnact_stats_forward
    raise ValueError(f"{OP}: unknown backend {backend!r}")


def _layout_reasons(srcs, weight, stride, padding) -> list[str]:
    why = []
    if weight.dtype not in KERNEL_DTYPES:
        why.append(f"dtype {weight.dtype} not supported")
    k = weight.shape[-1]
    if weight.shape[-2] != k or k not in (1, 3) or padding != k // 2:
        why.append(
            f"only 1x1 (padding 0) and 3x3 (padding 1) kernels, got {tuple(weight.shape[-2:])}, pad {padding}"
        )
    return why


def _triton_reasons(srcs, scale, shift, weight, bias, stride, padding, *a) -> list[str]:
    why = triton_reasons(list(srcs) + [weight]) + _layout_reasons(srcs, weight, stride, padding)
    if len(srcs) > 4:
        why.append("at most 4 sources")
    return why


def _cuda_reasons(srcs, scale, shift, weight, bias, stride, padding, *a) -> list[str]:
    why = cuda_reasons(list(srcs) + [weight], "rsb_prologue_cuda") + _layout_reasons(
        srcs, weight, stride, padding
    )
    if len(srcs) > 4:
        why.append("at most 4 sources")
    if any(s.shape != srcs[0].shape for s in srcs):
        why.append("all sources must have one shape")
    return why


DISPATCHER = register(
    Dispatcher(
        OP,
        [
            Backend("cuda", lambda *a: _cuda_module().conv_bnact_stats_forward(*a), _cuda_reasons),
            Backend("triton", lambda *a: _triton_module().conv_bnact_stats_forward(*a), _triton_reasons),
            Backend("reference", _reference.conv_bnact_stats_forward, lambda *a, **k: []),
        ],
    ),
    lambda device: (
        [torch.randn(2, 8, 6, 5, device=device), torch.randn(2, 8, 6, 5, device=device)],
        torch.rand(16, device=device) + 0.5,
        torch.randn(16, device=device),
        torch.randn(8, 8, 3, 3, device=device),
        None,
        1,
        1,
        True,
        False,
        True,
    ),
)


_is_cl = _reference.channels_last_like


def _out_shape(srcs, weight, stride, padding):
    n, _, h, w = srcs[0].shape
    k = weight.shape[-1]
    return (n, weight.shape[0], (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)


@torch.library.custom_op("rsn_fast::rsb_conv_bnact_stats", mutates_args=())
def _op(
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
    save_input: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    z, s, q = _forward_impl(backend)(srcs, scale, shift, weight, bias, stride, padding, relu, cat, stats)
    mf = torch.channels_last if _is_cl(srcs[0]) else torch.contiguous_format
    z = z.contiguous(memory_format=mf)
    if save_input and not _identity_prologue(srcs, scale, relu):
        # the conv input, kept for the weight gradient when the caller chose not to recompute it
        u = _reference.prologue(srcs, scale, shift, relu, cat, weight.dtype)
    else:
        u = z.new_empty((0,))
    return z, s, q, u


def _identity_prologue(srcs, scale, relu) -> bool:
    # u is the source itself, which backward has anyway (and an output may not alias an input)
    return len(srcs) == 1 and scale is None and not relu


@_op.register_fake
def _(srcs, scale, shift, weight, bias, stride, padding, relu, cat, stats, save_input, backend):
    mf = torch.channels_last if _is_cl(srcs[0]) else torch.contiguous_format
    z = torch.empty(_out_shape(srcs, weight, stride, padding), dtype=weight.dtype, device=weight.device)
    z = z.contiguous(memory_format=mf)
    c = weight.shape[0] if stats else 0
    s = weight.new_empty((c,), dtype=torch.float32)
    if save_input and not _identity_prologue(srcs, scale, relu):
        n, _, h, w = srcs[0].shape
        cin = sum(t.shape[1] for t in srcs) if cat else srcs[0].shape[1]
        u = torch.empty((n, cin, h, w), dtype=weight.dtype, device=weight.device).contiguous(memory_format=mf)
    else:
        u = weight.new_empty((0,))
    return z, s, s.clone(), u


def _setup_context(ctx, inputs, output):
    srcs, scale, shift, weight, bias, stride, padding, relu, cat, stats, save_input, backend = inputs
    z, _, _, u = output
    save_input = save_input and not _identity_prologue(srcs, scale, relu)
    ctx.n_srcs = len(srcs)
    ctx.has_scale = scale is not None
    ctx.has_bias = bias is not None
    ctx.cfg = (stride, padding, relu, cat, save_input)
    ctx.backend = backend
    ctx.save_for_backward(z, weight, u, *([scale, shift] if scale is not None else []), *srcs)


def _backward(ctx, grad_z, grad_sum, grad_sumsq, grad_u):
    z, weight, u, *rest = ctx.saved_tensors
    stride, padding, relu, cat, save_input = ctx.cfg
    scale, shift = (rest[0], rest[1]) if ctx.has_scale else (None, None)
    srcs = rest[2:] if ctx.has_scale else rest
    dsrcs, dscale, dshift, dw, db = _backend_module(ctx.backend).conv_bnact_stats_backward(
        grad_z,
        grad_sum,
        grad_sumsq,
        z,
        list(srcs),
        scale,
        shift,
        weight,
        ctx.has_bias,
        stride,
        padding,
        relu,
        cat,
        u if save_input else None,
    )
    return dsrcs, dscale, dshift, dw, db, None, None, None, None, None, None, None


_op.register_autograd(_backward, setup_context=_setup_context)


def conv_bnact_stats(
    srcs: list[torch.Tensor],
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int | None = None,
    relu: bool = True,
    cat: bool = False,
    stats: bool = True,
    save_input: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One RSB convolution with its fused prologue and epilogue (see :mod:`rsn_fast.ops.rsb.reference`).

    Args:
        srcs: 1..4 tensors (N, C_k, H, W) of one dtype, contiguous or channels-last (channel slices of a
            channels-last tensor are fine). Summed when ``cat`` is False (all C_k equal), else concatenated.
        scale, shift: (sum C_k,) per-channel affine applied to each source on load, or both None.
        weight: (C_out, C_in, k, k), k in {1, 3}; C_in = C_k (sum) or sum C_k (cat).
        bias: optional (C_out,), added in the epilogue.
        stride, padding: of the convolution; padding defaults to k // 2.
        relu: ReLU after the affine of each source.
        stats: also return the per-channel sum and sum of squares of z (fp32).
        save_input: keep the conv input for backward instead of recomputing it from the sources.
        backend: "cuda", "triton" or "reference"; default RSN_FAST_BACKEND, then the first that can run.

    Returns:
        z (N, C_out, H', W') in the weight's dtype and the first source's memory format; sum, sumsq (C_out,)
        float32, or empty when ``stats`` is False.
    """
    if padding is None:
        padding = weight.shape[-1] // 2
    if exporting():
        z, s, q = _reference.conv_bnact_stats_forward(
            srcs, scale, shift, weight, bias, stride, padding, relu, cat, stats
        )
        return z, s, q
    name = DISPATCHER.choose(srcs, scale, shift, weight, bias, stride, padding, backend=backend).name
    z, s, q, _ = torch.ops.rsn_fast.rsb_conv_bnact_stats(
        srcs, scale, shift, weight, bias, stride, padding, relu, cat, stats, save_input, name
    )
    return z, s, q


# ------------------------------------------------------------------------------------ the block's final pass
def _epilogue_reasons_common(z) -> list[str]:
    return [] if z.dtype in KERNEL_DTYPES else [f"dtype {z.dtype} not supported"]


EPILOGUE_DISPATCHER = register(
    Dispatcher(
        "rsb_epilogue",
        [
            Backend(
                "cuda",
                lambda *a: _cuda_module().epilogue_forward(*a),
                lambda z, *a: cuda_reasons([z], "rsb_epilogue_cuda") + _epilogue_reasons_common(z),
            ),
            Backend(
                "triton",
                lambda *a: _eltwise_module().epilogue_forward(*a),
                lambda z, *a: triton_reasons([z]) + _epilogue_reasons_common(z),
            ),
            Backend("reference", _reference.epilogue_forward, lambda *a, **k: []),
        ],
    ),
    lambda device: (
        torch.randn(2, 8, 6, 5, device=device),
        torch.rand(8, device=device) + 0.5,
        torch.randn(8, device=device),
        torch.randn(2, 8, 6, 5, device=device),
        None,
        None,
    ),
)


@torch.library.custom_op("rsn_fast::rsb_epilogue", mutates_args=())
def _epilogue_op(
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    r: torch.Tensor,
    r_scale: torch.Tensor | None,
    r_shift: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    out = _backend_module(backend).epilogue_forward(z, scale, shift, r, r_scale, r_shift)
    mf = torch.channels_last if _is_cl(z) else torch.contiguous_format
    return out.contiguous(memory_format=mf)


@_epilogue_op.register_fake
def _(z, scale, shift, r, r_scale, r_shift, backend):
    mf = torch.channels_last if _is_cl(z) else torch.contiguous_format
    return torch.empty_like(z, memory_format=mf)


def _epilogue_setup(ctx, inputs, output):
    z, scale, shift, r, r_scale, r_shift, backend = inputs
    ctx.backend = backend
    ctx.has_r_scale = r_scale is not None
    ctx.dtypes = (scale.dtype, shift.dtype, r.dtype)
    ctx.save_for_backward(output, z, r, scale, *([r_scale] if r_scale is not None else []))


def _epilogue_backward(ctx, grad):
    out, z, r, scale, *rest = ctx.saved_tensors
    r_scale = rest[0] if ctx.has_r_scale else None
    dz, dr, sums = _backend_module(ctx.backend).epilogue_backward(grad, out, z, r, scale, r_scale)
    s_dtype, sh_dtype, r_dtype = ctx.dtypes
    d_rs = sums[2].to(r_scale.dtype) if r_scale is not None else None
    d_rb = sums[1].to(r_scale.dtype) if r_scale is not None else None
    return dz, sums[0].to(s_dtype), sums[1].to(sh_dtype), dr.to(r_dtype), d_rs, d_rb, None


_epilogue_op.register_autograd(_epilogue_backward, setup_context=_epilogue_setup)


def rsb_epilogue(
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    r: torch.Tensor,
    r_scale: torch.Tensor | None = None,
    r_shift: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The RSB's final pass in one kernel: ``relu(z * scale + shift + r')``, ``r' = r * r_scale + r_shift`` or r.

    Args:
        z: (N, C, H, W) raw output of the block's last 1x1 conv, float32/16/bf16 (any dtype on reference).
        scale, shift: (C,) BN3 as a per-channel affine (from batch statistics in training; differentiable).
        r: (N, C, H, W) the residual: the block input (identity) or the raw downsample conv output.
        r_scale, r_shift: (C,) the downsample BN as an affine, or None for an identity residual.
        backend: "cuda", "triton" or "reference"; default RSN_FAST_BACKEND, then the first that can run.

    Returns:
        (N, C, H, W) in z's dtype and memory format; computed in fp32 and rounded once.
    """
    if exporting():
        return _reference.epilogue_forward(z, scale, shift, r, r_scale, r_shift)
    name = EPILOGUE_DISPATCHER.choose(z, scale, shift, r, r_scale, r_shift, backend=backend).name
    return torch.ops.rsn_fast.rsb_epilogue(z, scale, shift, r, r_scale, r_shift, name)
