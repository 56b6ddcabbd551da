"""rsb_conv_bnact_stats: reference vs the plain torch composition, Triton and CUDA vs the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsn_fast.ops._dispatch import triton_reasons
from rsn_fast.ops.rsb import conv_bnact_stats
from tests.conftest import TRITON_INTERPRET
from tests.tolerances import assert_max_within_torch_error, assert_within_torch_error, reduction_ulps


def _plain(srcs, scale, shift, weight, bias, stride, relu, cat):
    """The math written out with torch ops, in the inputs' dtype (no fusion, no fp32 upcast)."""
    acts = []
    off = 0
    for s in srcs:
        c = s.shape[1]
        v = s
        if scale is not None:
            v = v * scale[off : off + c].view(1, c, 1, 1).to(s.dtype) + shift[off : off + c].view(
                1, c, 1, 1
            ).to(s.dtype)
        off += c
        acts.append(torch.relu(v) if relu else v)
    u = torch.cat(acts, 1) if cat else sum(acts[1:], acts[0])
    z = F.conv2d(u, weight, bias, stride=stride, padding=weight.shape[-1] // 2)
    return z, z.sum((0, 2, 3)), (z * z).sum((0, 2, 3))


def _inputs(nsrc, c, cout, ks, cat, dtype, channels_last, n=2, h=7, w=5, affine=True, bias=False):
    base = torch.randn(n, nsrc * c + 3, h, w, dtype=dtype)
    if channels_last:
        base = base.contiguous(memory_format=torch.channels_last)
    srcs = [base[:, 3 + i * c : 3 + (i + 1) * c] for i in range(nsrc)]  # channel slices, read in place
    if not channels_last:
        srcs = [s.contiguous() for s in srcs]
    scale = torch.rand(nsrc * c, dtype=torch.float32) + 0.5 if affine else None
    shift = torch.randn(nsrc * c, dtype=torch.float32) if affine else None
    cin = nsrc * c if cat else c
    weight = torch.randn(cout, cin, ks, ks, dtype=dtype) / (cin * ks * ks) ** 0.5
    b = torch.randn(cout, dtype=dtype) if bias else None
    return srcs, scale, shift, weight, b


CASES = [  # (nsrc, C_src, C_out, k, stride, cat)
    (1, 26, 26, 3, 1, False),  # first conv of a branch
    (2, 26, 26, 3, 1, False),  # step sum
    (4, 13, 20, 1, 1, False),  # more sources than the RSB uses
    (4, 26, 64, 1, 1, True),  # final 1x1 over the concat
    (1, 64, 104, 1, 2, False),  # conv_bn_relu1 / downsample with stride 2
]


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_plain_composition(case):
    nsrc, c, cout, ks, stride, cat = case
    srcs, scale, shift, weight, bias = _inputs(nsrc, c, cout, ks, cat, torch.float64, False, bias=True)
    got = conv_bnact_stats(srcs, scale.double(), shift.double(), weight, bias, stride, relu=True, cat=cat,
                           backend="reference")  # fmt: skip
    want = _plain(srcs, scale.double(), shift.double(), weight, bias, stride, True, cat)
    for g, e, name in zip(got, want, ("z", "sum", "sumsq")):
        torch.testing.assert_close(g.double(), e, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[4]])
@pytest.mark.parametrize("save_input", [False, True])
def test_reference_gradients_float64(case, save_input):
    """The op's hand-written backward (stats gradients folded into dz, ReLU mask, fan-out) vs autograd."""
    nsrc, c, cout, ks, stride, cat = case
    srcs, scale, shift, weight, _ = _inputs(nsrc, c, cout, ks, cat, torch.float64, True, n=1, h=5, w=3)
    srcs = [s.detach().clone().requires_grad_() for s in srcs]
    leaves = [
        *srcs,
        scale.double().requires_grad_(),
        shift.double().requires_grad_(),
        weight.requires_grad_(),
    ]

    def loss(fn):
        z, s, q = fn()
        # every output reaches the loss, like z (next layer), sum and sumsq (BN statistics) do
        return (
            (z * torch.cos(z)).sum()
            + (s * torch.linspace(-1, 1, s.numel(), dtype=s.dtype)).sum()
            + q.sum() * 0.01
        )

    fused = loss(lambda: conv_bnact_stats(srcs, leaves[-3], leaves[-2], weight, None, stride, relu=True, cat=cat,
                                          save_input=save_input, backend="reference"))  # fmt: skip
    g_fused = torch.autograd.grad(fused, leaves)
    plain = loss(lambda: _plain(srcs, leaves[-3], leaves[-2], weight, None, stride, True, cat))
    g_plain = torch.autograd.grad(plain, leaves)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_opcheck_and_compile():
    srcs, scale, shift, weight, _ = _inputs(2, 8, 8, 3, False, torch.float32, True, n=1, h=5, w=4)
    args = (srcs, scale, shift, weight, None, 1, 1, True, False, True, False, "reference")
    torch.library.opcheck(torch.ops.rsn_fast.rsb_conv_bnact_stats.default, args)

    def f(a, b):
        z, s, q = conv_bnact_stats([a, b], scale, shift, weight, backend="reference")
        return z.sum() + s.sum() + q.sum()

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(*srcs)
    torch.testing.assert_close(got, f(*srcs), rtol=1e-5, atol=1e-3)


needs_triton = pytest.mark.skipif(
    bool(triton_reasons([torch.empty(0)])) and not torch.cuda.is_available(),
    reason="Triton needs a GPU with compute capability >= 8.0 or TRITON_INTERPRET=1",
)


def _device():
    return "cpu" if TRITON_INTERPRET or not torch.cuda.is_available() else "cuda"


@needs_triton
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_triton_matches_reference(case, dtype, channels_last):
    if not channels_last and dtype != torch.float32:
        pytest.skip("layout handling is dtype-independent; NCHW checked in fp32")
    nsrc, c, cout, ks, stride, cat = case
    srcs, scale, shift, weight, bias = _inputs(nsrc, c, cout, ks, cat, dtype, channels_last, n=1, h=7, w=5,
                                               bias=True)  # fmt: skip
    dev = _device()
    srcs, scale, shift, weight, bias = ([s.to(dev) for s in srcs], scale.to(dev), shift.to(dev), weight.to(dev),
                                        bias.to(dev))  # fmt: skip
    got = conv_bnact_stats(srcs, scale, shift, weight, bias, stride, relu=True, cat=cat, backend="triton")
    exact = conv_bnact_stats([s.double() for s in srcs], scale.double(), shift.double(), weight.double(),
                             bias.double(), stride, relu=True, cat=cat, backend="reference")  # fmt: skip
    torch_out = conv_bnact_stats(
        srcs, scale, shift, weight, bias, stride, relu=True, cat=cat, backend="reference"
    )
    assert got[0].dtype == dtype and got[0].shape == exact[0].shape
    assert got[0].is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    # (the interpreter's truncating fp32 -> bf16 cast is replaced by round-to-nearest in the kernel: ROUND)
    # per element: z sums the cin*k*k products (+ bias); the statistics add the sum over the output pixels
    taps = weight.shape[1] * ks * ks + 1
    for g, e, t, name, n in zip(
        got, exact, torch_out, ("z", "sum", "sumsq"), (taps, *[taps + got[0][:, 0].numel()] * 2)
    ):
        assert_within_torch_error(g.cpu(), e.cpu().to(g.dtype), t.cpu(), name)
        assert_max_within_torch_error(
            g.cpu(), e.cpu(), t.cpu(), f"{name} (max)", ulps=reduction_ulps(n, g.dtype, dtype)
        )


@needs_triton
def test_triton_no_stats_no_affine():
    srcs, _, _, weight, _ = _inputs(1, 16, 24, 3, False, torch.float32, True, n=1, h=4, w=6, affine=False)
    dev = _device()
    srcs, weight = [s.to(dev) for s in srcs], weight.to(dev)
    z, s, q = conv_bnact_stats(srcs, None, None, weight, None, relu=False, stats=False, backend="triton")
    assert s.numel() == 0 and q.numel() == 0
    torch.testing.assert_close(z, F.conv2d(srcs[0], weight, padding=1), rtol=1e-4, atol=1e-4)
