"""Depthwise convolution: reference vs a naive tap sum, every backend vs the reference (output and all
gradients), layouts, dtypes, odd sizes, poisoned outputs, bad inputs, opcheck and torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsn_fast.nn import DepthwiseConv2d
from rsn_fast.ops import BackendError
from rsn_fast.ops.depthwise_conv2d import DISPATCHER, depthwise_conv2d
from tests.backends import CUDA_DEVICE, EMULATION, needs_cuda_backend
from tests.conftest import TRITON_INTERPRET
from tests.tolerances import assert_sum_bound, assert_within_torch_error

GPU = torch.cuda.is_available()
GPU_TRITON = GPU and torch.cuda.get_device_capability()[0] >= 8


def _backend_params():
    """(backend, device) pairs that can run here; the others are skipped with the reason."""
    return [
        pytest.param(
            "triton",
            "cpu" if TRITON_INTERPRET else "cuda",
            marks=pytest.mark.skipif(
                not (TRITON_INTERPRET or GPU_TRITON),
                reason="Triton needs a GPU with cc >= 8.0 or TRITON_INTERPRET=1",
            ),
        ),
        pytest.param("cuda", CUDA_DEVICE, marks=needs_cuda_backend),
    ]


BACKENDS = _backend_params()
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# under the interpreter: small shapes; on a GPU the sizes
SMALL = [((3, 17, 15, 13), 5, True), ((3, 26, 16, 16), 3, False), ((1, 7, 11, 9), 9, True)]
LARGE = [
    ((3, 256, 64, 48), 9, True),
    ((3, 17, 63, 47), 9, True),
    ((3, 26, 96, 72), 3, False),
    ((2, 24, 63, 47), 31, True),
]
# the emulated CUDA backend (CPU tensors): >= 2 of its 16 x 32 conv and weight-gradient tiles along H and W, with
# partial last ones (SMALL's 15 x 13 is one tile: a dropped H-tile offset of the weight gradient passed)
EMULATED = [((2, 5, 19, 35), 5, True)]
LARGE_EXTRA = [((2, 32, 64, 48), 13, True), ((1, 17, 16, 16), 7, False), ((1, 256, 64, 48), 9, False)]


def naive_depthwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, p: int) -> torch.Tensor:
    """Sum of shifted copies of the zero-padded input: the definition, independent of F.conv2d."""
    k = w.shape[-1]
    H, W = x.shape[-2] + 2 * p - k + 1, x.shape[-1] + 2 * p - k + 1
    xp = F.pad(x, (p, p, p, p))
    y = sum(
        xp[:, :, i : i + H, j : j + W] * w[None, :, 0, i, j, None, None] for i in range(k) for j in range(k)
    )
    return y if b is None else y + b[None, :, None, None]


def _inputs(shape, k, bias, dtype, device, channels_last):
    N, C, H, W = shape
    x = torch.randn(shape, dtype=dtype, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(C, 1, k, k, device=device) / k).to(dtype)
    b = torch.randn(C, dtype=dtype, device=device) if bias else None
    return x, w, b


@pytest.mark.parametrize("k,p", [(3, 1), (5, 2), (9, 4), (5, 0), (7, 6)])
def test_reference_matches_naive_tap_sum(k, p):
    x = torch.randn(2, 3, 10, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = depthwise_conv2d(x, w, b, padding=p, backend="reference")
    yn = naive_depthwise(x, w, b, p)
    torch.testing.assert_close(y, yn)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), g)
    grads_n = torch.autograd.grad(yn, (x, w, b), g)
    for a, r in zip(grads, grads_n):
        torch.testing.assert_close(a, r)


def test_gradcheck_reference_float64():
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: depthwise_conv2d(*a, padding=1, backend="reference"), (x, w, b)
    )


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradcheck_kernel_float64(backend, device):
    if backend == "cuda":
        pytest.skip("the CUDA kernels take float16/bfloat16/float32 only")
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)
    f = lambda *a: depthwise_conv2d(*a, padding=1, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)


def _check_against_reference(backend, device, shape, k, bias, dtype, channels_last, upstream="random"):
    x, w, b = _inputs(shape, k, bias, dtype, device, channels_last)
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
    y = depthwise_conv2d(x, w, b, backend=backend)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    g = torch.randn_like(y) if upstream == "random" else None
    grads = torch.autograd.grad(y, leaves, g) if g is not None else torch.autograd.grad(y.sum(), leaves)
    # the exact answer in float64 (on the same device: fast on a GPU), and eager PyTorch's own error at this dtype
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    x64, w64 = leaves64[:2]
    b64 = leaves64[2] if bias else None
    y64 = F.conv2d(x64, w64, b64, padding=k // 2, groups=shape[1])
    g64 = g.double() if g is not None else torch.ones_like(y64)
    grads64 = torch.autograd.grad(y64, leaves64, g64)
    lp = [t.detach().clone().requires_grad_() for t in leaves]
    y_t = F.conv2d(lp[0], lp[1], lp[2] if bias else None, padding=k // 2, groups=shape[1])
    grads_t = torch.autograd.grad(y_t, lp, g if g is not None else torch.ones_like(y_t))
    assert_within_torch_error(y, y64, y_t, "y")
    for name, a, r, t in zip(["dx", "dweight", "dbias"], grads, grads64, grads_t):
        assert_within_torch_error(a, r, t, name)
    # per element: the rounding bound of a sum of n fp32-accumulated terms (tests.tolerances.assert_sum_bound),
    # with sum|terms| from the same float64 math on |inputs|: y and dx sum the k*k taps (+ the bias), dweight and
    # dbias the N*H*W pixels
    abs64 = [t.detach().double().abs().requires_grad_() for t in leaves]
    ya = F.conv2d(abs64[0], abs64[1], abs64[2] if bias else None, padding=k // 2, groups=shape[1])
    grads_a = torch.autograd.grad(ya, abs64, g64.abs())
    N, _, H, W = shape
    for name, a, r, s, n in zip(
        ["y", "dx", "dweight", "dbias"], [y, *grads], [y64, *grads64], [ya, *grads_a],
        [k * k + bias, k * k, N * H * W, N * H * W],
    ):  # fmt: skip
        assert_sum_bound(a, r, s, n, f"{name} (per element)")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_matches_reference(backend, device, dtype, channels_last):
    shapes = LARGE if device != "cpu" else EMULATED if backend == "cuda" else SMALL[:1]
    for shape, k, bias in shapes:
        _check_against_reference(backend, device, shape, k, bias, dtype, channels_last)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("case", range(len(SMALL)))
def test_small_shapes_float32(backend, device, case):
    shape, k, bias = SMALL[case]
    if device != "cpu":
        _check_against_reference(backend, device, *LARGE_EXTRA[case], torch.float32, case % 2 == 1)
    _check_against_reference(backend, device, shape, k, bias, torch.float32, case % 2 == 1)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_backward_of_sum_expanded_grad(backend, device):
    # y.sum().backward() sends a stride-0 expanded gradient
    _check_against_reference(backend, device, (2, 5, 9, 7), 3, True, torch.float32, True, upstream="sum")
    _check_against_reference(backend, device, (2, 5, 9, 7), 5, True, torch.float32, False, upstream="sum")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_poisoned_outputs_are_overwritten(backend, device, monkeypatch):
    if backend == "triton":
        from rsn_fast.ops.depthwise_conv2d import triton as tri

        def poisoned(shape, like, memory_format):
            return torch.full(shape, float("nan"), device=like.device, dtype=like.dtype).contiguous(
                memory_format=memory_format
            )

        monkeypatch.setattr(tri, "new_output", poisoned)
    else:  # fill the caching allocator's free blocks with NaN so a fresh output starts from it
        torch.full((1 << 24,), float("nan"), device=device)
    for cl in (False, True):
        x, w, b = _inputs((2, 6, 11, 9), 5, True, torch.float32, device, cl)
        x.requires_grad_()
        w.requires_grad_()
        y = depthwise_conv2d(x, w, b, backend=backend)
        dx, dw = torch.autograd.grad(y, (x, w), torch.randn_like(y))
        for t in (y, dx, dw):
            assert torch.isfinite(t).all()
        torch.testing.assert_close(y, F.conv2d(x, w, b, padding=2, groups=6), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_opcheck(backend):
    if backend == "triton" and not TRITON_INTERPRET:
        pytest.skip("Triton opcheck on the CPU runs under TRITON_INTERPRET=1 (the GPU test covers CUDA)")
    x = torch.randn(2, 5, 9, 7, requires_grad=True)
    w = torch.randn(5, 1, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    torch.library.opcheck(torch.ops.rsn_fast.depthwise_conv2d.default, (x, w, b, 1, backend))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.rsn_fast.depthwise_conv2d.default, (xc, w, None, 1, backend))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck_kernel_on_gpu(backend, device):
    if device == "cpu" and backend != "cuda":
        pytest.skip("covered by test_opcheck under the interpreter")
    x = torch.randn(2, 5, 9, 7, device=device, requires_grad=True)
    w = torch.randn(5, 1, 3, 3, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.rsn_fast.depthwise_conv2d.default, (x, w, None, 1, backend))


def test_compile_fullgraph_module():
    backend = "triton" if TRITON_INTERPRET else "reference"
    conv = DepthwiseConv2d(6, 5, backend=backend)
    x = torch.randn(2, 6, 9, 8, requires_grad=True)
    compiled = torch.compile(lambda t: conv(t).relu().sum(), fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    loss.backward()
    ref_x = x.detach().requires_grad_()
    ref = F.conv2d(ref_x, conv.weight, conv.bias, padding=2, groups=6).relu().sum()
    gx, gw = torch.autograd.grad(ref, (ref_x, conv.weight))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad, gx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: (torch.randn(2, 3, 8), torch.randn(3, 1, 3, 3), None, 1), "'x'"),
        (lambda: (torch.randn(2, 3, 8, 8).int(), torch.randn(3, 1, 3, 3), None, 1), "'x'"),
        (lambda: (torch.randn(2, 3, 8, 8), torch.randn(3, 1, 4, 4), None, 1), "'weight' kernel size"),
        (lambda: (torch.randn(2, 3, 40, 40), torch.randn(3, 1, 33, 33), None, 16), "'weight' kernel size"),
        (lambda: (torch.randn(2, 3, 8, 8), torch.randn(3, 2, 3, 3), None, 1), "'weight' must have shape"),
        (lambda: (torch.randn(2, 3, 8, 8), torch.randn(4, 1, 3, 3), None, 1), "'weight' has 4 channels"),
        (lambda: (torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3).half(), None, 1), "'weight' has dtype"),
        (
            lambda: (torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3, device="meta"), None, 1),
            "'weight' is on",
        ),
        (lambda: (torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3), torch.randn(4), 1), "'bias'"),
        (lambda: (torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3), None, 3), "'padding'"),
    ],
)
def test_bad_inputs_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        depthwise_conv2d(*make(), backend="reference")


def test_dispatch_errors_list_reasons():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3)
    if not EMULATION:  # the emulated cuda backend takes CPU tensors
        with pytest.raises(BackendError, match="not CUDA tensors"):
            depthwise_conv2d(x, w, backend="cuda")
    with pytest.raises(BackendError, match="unknown backend"):
        depthwise_conv2d(x, w, backend="nope")
    assert DISPATCHER.choose(x, w, None, 1).name == ("triton" if TRITON_INTERPRET else "reference")


@needs_cuda_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_conv_with_channel_statistics(dtype, channels_last):
    """The statistics epilogue (used by the fused PRM gate): y equals the plain kernel's, and the per-channel sum
    and sum of squares equal those of y, deterministically (fixed-order reduction of per-block partials)."""
    from rsn_fast.ops.depthwise_conv2d import cuda as dw_cuda

    for shape in ((2, 17, 19, 13), (2, 40, 20, 9)) if EMULATION else ((3, 17, 63, 47), (2, 40, 20, 9)):
        x, w, _ = _inputs(shape, 9, False, dtype, CUDA_DEVICE, channels_last)
        y, sums = dw_cuda.conv(x, w, None, 4, stats=True)
        y_plain, none = dw_cuda.conv(x, w, None, 4)
        assert none is None and sums.dtype == torch.float64 and sums.shape == (2, shape[1])
        assert torch.equal(y, y_plain)
        assert y.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        yd = y.double()
        torch.testing.assert_close(sums[0], yd.sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(sums[1], (yd * yd).sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
        assert torch.equal(sums, dw_cuda.conv(x, w, None, 4, stats=True)[1])


def _dw_all(x, w, b, g, backend):
    """(y, dx, dweight, dbias) of the op for upstream g."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    y = depthwise_conv2d(*leaves, backend=backend)
    return (y, *torch.autograd.grad(y, leaves, g))


@pytest.mark.skipif(
    not (TRITON_INTERPRET or GPU_TRITON), reason="Triton needs cc >= 8.0 or TRITON_INTERPRET=1"
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_triton_multi_tile_per_element(dtype, channels_last):
    """A shape of about 1.5 of the launcher's own tiles along every tiled dimension (asserted on the recorded
    launches), every output and gradient element within the rounding bound of its exact value, and, under the
    interpreter, low-precision outputs equal to the nearest value of the kernel's own fp32 result."""
    from rsn_fast.ops._launch import recording
    from rsn_fast.ops.depthwise_conv2d import triton as tri
    from tests.launches import assert_multi_tile
    from tests.tolerances import assert_rounded_once, assert_sum_bound

    # small tiles (rsn_fast.ops._launch) while recording, for the shape choice and both Triton runs
    with recording() as launches:
        dev = "cpu" if TRITON_INTERPRET else "cuda"
        bh, bw, bc, _ = tri._tile(64, channels_last)
        C = bc + bc // 2 + 1 if bc > 1 else 3
        assert tri._tile(C, channels_last)[2] == bc
        # 2 x 3 spatial tiles: unequal counts, so a swapped tile row/column reads the wrong tile
        N, H, W, k = 3, bh + bh // 2 + 1, 2 * bw + bw // 2 + 1, 3
        x, w, b = _inputs((N, C, H, W), k, True, dtype, dev, channels_last)
        g = torch.randn(N, C, H, W, device=dev).to(dtype)
        launches.clear()  # the launches of the call under test only
        got = _dw_all(x, w, b, g, "triton")
        launches = list(launches)
        assert_multi_tile(launches, ["_dw_conv_kernel", "_dw_wgrad_kernel"])
        exact = _dw_all(x.double(), w.double(), b.double(), g.double(), "reference")
        abs_sum = _dw_all(x.double().abs(), w.double().abs(), b.double().abs(), g.double().abs(), "reference")
        for name, o, e, a, n in zip(
            ("y", "dx", "dweight", "dbias"), got, exact, abs_sum, (k * k + 1, k * k, N * H * W, N * H * W)
        ):
            assert o.dtype == dtype
            assert_sum_bound(o, e, a, n, name)
        if TRITON_INTERPRET and dtype != torch.float32:
            ref32 = _dw_all(x.float(), w.float(), b.float(), g.float(), "triton")
            for name, o, o32 in zip(("y", "dx", "dweight"), got, ref32):
                assert_rounded_once(o, o32, name)
