"""RSB op backends beyond the forward conv: the final epilogue op (reference vs plain torch, Triton and CUDA vs
the reference, forward and backward) and the conv op's backward per backend (Triton elementwise kernels under
TRITON_INTERPRET=1; the CUDA kernels, which skip without a GPU)."""

from __future__ import annotations

import pytest
import torch

from rsn_fast.ops._dispatch import cuda_reasons
from rsn_fast.ops.rsb import conv_bnact_stats, rsb_epilogue
from tests.backends import CUDA_DEVICE, EMULATION, HAS_CUDA_BACKEND
from tests.conftest import TRITON_INTERPRET
from tests.tolerances import (
    ELEMENTWISE,
    assert_max_within_torch_error,
    assert_within_torch_error,
    reduction_ulps,
)

HAS_CUDA_OPS = HAS_CUDA_BACKEND and not cuda_reasons(
    [torch.empty(0, device=CUDA_DEVICE)], "rsb_prologue_cuda"
)
BACKENDS = [
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(
            not TRITON_INTERPRET and not torch.cuda.is_available(),
            reason="Triton needs TRITON_INTERPRET=1 or a GPU",
        ),
    ),
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not HAS_CUDA_OPS, reason="needs a CUDA GPU and rsn_fast._C built with CUDA"),
    ),
]


def _device(backend: str) -> str:
    if backend == "cuda":
        return CUDA_DEVICE
    return "cpu" if TRITON_INTERPRET else "cuda"


def _epilogue_inputs(dtype, cl, downsample, n=2, c=24, h=5, w=7, device="cpu"):
    fmt = torch.channels_last if cl else torch.contiguous_format
    z = torch.randn(n, c, h, w, dtype=dtype, device=device).contiguous(memory_format=fmt)
    r = torch.randn(n, c, h, w, dtype=dtype, device=device).contiguous(memory_format=fmt)
    vec = lambda lo: (torch.rand(c, device=device) + lo) if lo is not None else torch.randn(c, device=device)  # noqa: E731
    a, b = vec(0.5), vec(None)
    ra, rb = (vec(0.5), vec(None)) if downsample else (None, None)
    return z, a, b, r, ra, rb


def _epilogue_plain(z, a, b, r, ra, rb):
    c = z.shape[1]
    y = z * a.view(1, c, 1, 1) + b.view(1, c, 1, 1)
    rr = r if ra is None else r * ra.view(1, c, 1, 1) + rb.view(1, c, 1, 1)
    return torch.relu(y + rr)


@pytest.mark.parametrize("downsample", [False, True])
def test_epilogue_reference_vs_plain_float64(downsample):
    args = [t.double().requires_grad_() if t is not None else None for t in _epilogue_inputs(torch.float64, True,
                                                                                             downsample)]  # fmt: skip
    leaves = [t for t in args if t is not None]
    g = torch.randn_like(args[0])
    out = rsb_epilogue(*args, backend="reference")
    want = _epilogue_plain(*args)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)
    got_g = torch.autograd.grad((out * g).sum(), leaves)
    want_g = torch.autograd.grad((want * g).sum(), leaves)
    for x, y in zip(got_g, want_g):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_epilogue_opcheck():
    z, a, b, r, ra, rb = _epilogue_inputs(torch.float32, True, True, n=1, c=8, h=3, w=4)
    torch.library.opcheck(torch.ops.rsn_fast.rsb_epilogue.default, (z, a, b, r, ra, rb, "reference"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cl,downsample", [(True, True), (False, False)])
def test_epilogue_backend_vs_reference(backend, dtype, cl, downsample):
    dev = _device(backend)
    base = _epilogue_inputs(dtype, cl, downsample, device=dev)
    g = torch.randn_like(base[0])
    results = []
    for be in (backend, "reference"):
        args = [t.detach().clone().requires_grad_() if t is not None else None for t in base]
        out = rsb_epilogue(*args, backend=be)
        out.backward(g)
        results.append((out, [t.grad for t in args if t is not None]))
    (out, grads), (out_r, grads_r) = results
    assert out.dtype == dtype and out.is_contiguous(
        memory_format=torch.channels_last if cl else torch.contiguous_format
    )
    torch.testing.assert_close(out, out_r, **ELEMENTWISE[dtype])
    for x, y in zip(grads, grads_r):
        # per-element grads round once like the reference; per-channel sums are fp32 sums of the same products
        tol = ELEMENTWISE[x.dtype] if x.dim() == 4 else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x, y, **tol)


def _conv_inputs(nsrc, c, cout, ks, cat, dtype, device, n=2, h=6, w=5):
    base = torch.randn(n, nsrc * c + 2, h, w, dtype=dtype, device=device).contiguous(
        memory_format=torch.channels_last
    )
    srcs = [base[:, 2 + i * c : 2 + (i + 1) * c] for i in range(nsrc)]  # channel slices, read in place
    scale = torch.rand(nsrc * c, device=device) + 0.5
    shift = torch.randn(nsrc * c, device=device)
    cin = nsrc * c if cat else c
    weight = torch.randn(cout, cin, ks, ks, dtype=dtype, device=device) / (cin * ks * ks) ** 0.5
    return srcs, scale, shift, weight


CONV_CASES = [  # (nsrc, C_src, C_out, k, stride, cat, affine+relu)
    (2, 13, 13, 3, 1, False, True),  # step sum, odd channel count
    (4, 10, 24, 1, 1, True, True),  # final 1x1 over the concat
    (1, 16, 20, 1, 2, False, False),  # conv_bn_relu1 / downsample: identity prologue
]


def _conv_loss(out, wz, ws):
    z, s, q = out
    return (z.double() * wz).sum() + (s.double() * ws).sum() + 1e-2 * q.double().sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("save_input", [False, True])
def test_conv_backward_backend(backend, case, dtype, save_input):
    """Every gradient of the conv op (through z, sum and sumsq) vs float64, within 2x torch's own error."""
    nsrc, c, cout, ks, stride, cat, act = case
    dev = _device(backend)
    srcs, scale, shift, weight = _conv_inputs(nsrc, c, cout, ks, cat, dtype, dev)
    if not act:
        scale = shift = None
    z0 = conv_bnact_stats(srcs, scale, shift, weight, stride=stride, relu=act, cat=cat, backend="reference")[
        0
    ]
    wz = torch.randn(z0.shape, dtype=torch.float64, device=dev)
    ws = torch.randn(cout, dtype=torch.float64, device=dev)

    def grads(be, to):
        s_ = [t.detach().to(to).requires_grad_() for t in srcs]
        a = scale.detach().to(to if to == torch.float64 else torch.float32).requires_grad_() if act else None
        b = shift.detach().to(a.dtype).requires_grad_() if act else None
        w_ = weight.detach().to(to).requires_grad_()
        out = conv_bnact_stats(
            s_, a, b, w_, stride=stride, relu=act, cat=cat, save_input=save_input, backend=be
        )
        leaves = s_ + ([a, b] if act else []) + [w_]
        return torch.autograd.grad(_conv_loss(out, wz, ws), leaves)

    got, exact, plain = grads(backend, dtype), grads("reference", torch.float64), grads("reference", dtype)
    for i, (x, e, t) in enumerate(zip(got, exact, plain)):
        assert x.dtype == t.dtype
        # float32 vectors (scale/shift grads) of low-precision math: judge with the compute dtype's tolerance
        assert_within_torch_error(x.cpu(), e.cpu().to(x.dtype), t.cpu(), f"grad {i}", dtype=dtype)
        # per element: at most the conv's cout*k*k-term input gradient chained with the N*H*W-pixel reduction
        n_terms = cout * ks * ks + z0[:, 0].numel()
        ulps = reduction_ulps(n_terms, x.dtype, dtype)
        assert_max_within_torch_error(x.cpu(), e.cpu(), t.cpu(), f"grad {i} (max)", ulps=ulps)


@pytest.mark.skipif(not HAS_CUDA_OPS, reason="needs a CUDA GPU and rsn_fast._C built with CUDA")
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_conv_forward(case, dtype):
    nsrc, c, cout, ks, stride, cat, act = case
    srcs, scale, shift, weight = _conv_inputs(nsrc, c, cout, ks, cat, dtype, CUDA_DEVICE, n=3, h=17, w=13)
    if not act:
        scale = shift = None
    got = conv_bnact_stats(srcs, scale, shift, weight, stride=stride, relu=act, cat=cat, backend="cuda")
    exact = conv_bnact_stats([s.double() for s in srcs], scale.double() if act else None,
                             shift.double() if act else None, weight.double(), stride=stride, relu=act, cat=cat,
                             backend="reference")  # fmt: skip
    plain = conv_bnact_stats(
        srcs, scale, shift, weight, stride=stride, relu=act, cat=cat, backend="reference"
    )
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    # per element: z sums the cin*k*k products; the statistics add the sum over the N*H*W output pixels
    taps = weight.shape[1] * ks * ks
    for x, e, t, name, n in zip(
        got, exact, plain, ("z", "sum", "sumsq"), (taps, *[taps + got[0][:, 0].numel()] * 2)
    ):
        assert_within_torch_error(x, e.to(x.dtype), t, name, dtype=dtype)
        assert_max_within_torch_error(x, e, t, f"{name} (max)", ulps=reduction_ulps(n, x.dtype, dtype))


@pytest.mark.skipif(not HAS_CUDA_OPS, reason="needs a CUDA GPU and rsn_fast._C built with CUDA")
def test_cuda_stats_deterministic_and_nchw():
    z = torch.randn(*((3, 40, 9, 7) if EMULATION else (8, 52, 33, 25)), device=CUDA_DEVICE)
    ops = torch.ops.rsn_fast
    for t in (z, z.contiguous(memory_format=torch.channels_last)):
        a, b = ops.rsb_channel_stats_cuda(t), ops.rsb_channel_stats_cuda(t)
        assert torch.equal(a, b)
        want = torch.stack([z.double().sum((0, 2, 3)), (z.double() ** 2).sum((0, 2, 3))])
        torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prologue_kernel_vs_reference(backend, case, dtype):
    """The recompute kernel (the conv input u): exact up to one rounding of the same fp32 value."""
    from rsn_fast.ops.rsb import reference

    nsrc, c, cout, ks, stride, cat, act = case
    dev = _device(backend)
    srcs, scale, shift, weight = _conv_inputs(nsrc, c, cout, ks, cat, dtype, dev)
    if backend == "triton":
        from rsn_fast.ops.rsb.triton_eltwise import prologue
    else:
        from rsn_fast.ops.rsb.cuda import prologue
    a, b = (scale, shift) if act else (None, None)
    got = prologue(srcs, a, b, act, cat, dtype)
    want = reference.prologue(srcs, a, b, act, cat, dtype)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, **ELEMENTWISE[dtype])


@pytest.mark.skipif(
    not TRITON_INTERPRET and not torch.cuda.is_available(), reason="Triton needs TRITON_INTERPRET=1 or a GPU"
)
def test_triton_multi_tile_per_element():
    """Every RSB Triton kernel (implicit-GEMM conv, prologue, fold, prologue backward, epilogue and its backward)
    at a shape spanning >= 2 tiles with a partial last one along M, N, K, pixels and channels (asserted on the
    recorded launches); every output and gradient element within twice the fp32 reference's own error."""
    from rsn_fast.ops._launch import recording
    from tests.launches import assert_multi_tile
    from tests.tolerances import assert_max_within_torch_error

    dev = _device("triton")
    c, n, h, w = 21, 1, 5, 7  # M = 35 pixels; 21 channels (the interpreter's tiles: 16 x 16 x 16, 16 x 8)
    srcs, scale, shift, weight = _conv_inputs(2, c, c, 3, False, torch.float32, dev, n=n, h=h, w=w)
    z0 = conv_bnact_stats(srcs, scale, shift, weight, relu=True, backend="reference")[0]
    wz = torch.randn(z0.shape, dtype=torch.float64, device=dev)
    ws = torch.randn(c, dtype=torch.float64, device=dev)
    epi = _epilogue_inputs(torch.float32, True, True, n=n, c=c, h=h, w=w, device=dev)
    ge = torch.randn_like(epi[0])

    def run(be, to):
        s_ = [t.detach().to(to).requires_grad_() for t in srcs]
        a, b = (
            t.detach().to(to if to == torch.float64 else torch.float32).requires_grad_()
            for t in (scale, shift)
        )
        w_ = weight.detach().to(to).requires_grad_()
        out = conv_bnact_stats(s_, a, b, w_, relu=True, save_input=False, backend=be)
        grads = torch.autograd.grad(_conv_loss(out, wz, ws), s_ + [a, b, w_])
        e_args = [t.detach().to(to).requires_grad_() for t in epi]
        e_out = rsb_epilogue(*e_args, backend=be)
        e_grads = torch.autograd.grad(e_out, e_args, ge.to(to))
        return [*out, *grads, e_out, *e_grads]

    with recording() as launches:
        got = run("triton", torch.float32)
    assert_multi_tile(
        launches,
        ["_conv_bnact_stats_kernel", "_prologue_kernel", "_grad_fold_kernel", "_prologue_bwd_kernel",
         "_epilogue_kernel", "_epilogue_bwd_kernel"],
    )  # fmt: skip
    exact, ref = run("reference", torch.float64), run("reference", torch.float32)
    for i, (x, e, r) in enumerate(zip(got, exact, ref)):
        # per-channel vectors (stats, d scale, d shift, epilogue affine grads) are fp32 sums over the M pixels
        ulps = 4 if x.dim() == 4 else 2 * n * h * w * 9
        assert_max_within_torch_error(x, e, r, f"result {i}", ulps=ulps)
