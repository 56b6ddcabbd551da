"""rsn_fast.ops.bn_add_relu: reference vs BatchNorm+add+ReLU in torch; C++/CUDA kernels vs the reference."""

import pytest
import torch
import torch.nn.functional as F

from rsn_fast import _ext
from rsn_fast.ops import bn_add_relu
from rsn_fast.ops._dispatch import REGISTRY, BackendError
from rsn_fast.ops.bn_add_relu import bn_add_relu_ref
from tests.backends import CUDA_DEVICE, EMULATION, needs_cuda_backend
from tests.tolerances import ELEMENTWISE

requires_ext = pytest.mark.skipif(
    not _ext.extension_available(), reason=f"rsn_fast._C not built: {_ext.load_extension()[1]}"
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(2, 8, 6, 4), (1, 17, 7, 5), (3, 1, 1, 1), (1, 5, 1, 9)]


def make_inputs(shape, dtype, device="cpu", channels_last=False):
    """Random x, residual (in dtype) and a folded scale/shift from random BN statistics (float32)."""
    n, c, h, w = shape
    x = torch.randn(shape, device=device).to(dtype)
    res = torch.randn(shape, device=device).to(dtype)
    if channels_last:
        x, res = x.to(memory_format=torch.channels_last), res.to(memory_format=torch.channels_last)
    scale = torch.rand(c, device=device) * 1.5 + 0.25
    shift = torch.randn(c, device=device)
    return x, scale, shift, res


def bn_composition(x, scale, shift, residual, relu):
    """The same math with torch's own BatchNorm in eval mode (mean/var chosen so it folds to scale/shift)."""
    c, eps = x.shape[1], 1e-5
    var = torch.rand(c, dtype=torch.float64) + 0.5
    weight = scale.double() * torch.sqrt(var + eps)
    mean = torch.randn(c, dtype=torch.float64)
    bias = shift.double() + mean * scale.double()
    y = F.batch_norm(x.double(), mean, var, weight, bias, training=False, eps=eps)
    if residual is not None:
        y = y + residual.double()
    return F.relu(y) if relu else y


@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_batchnorm_composition(shape, relu, with_residual):
    x, scale, shift, res = make_inputs(shape, torch.float64)
    res = res if with_residual else None
    expected = bn_composition(x, scale, shift, res, relu)
    torch.testing.assert_close(
        bn_add_relu_ref(x, scale, shift, res, relu), expected, **ELEMENTWISE[torch.float64]
    )
    if relu:
        assert (expected == 0).any(), "inputs too easy: the ReLU never clipped"


@requires_ext
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cpp_matches_reference(shape, dtype, channels_last):
    x, scale, shift, res = make_inputs(shape, dtype, channels_last=channels_last)
    for residual, relu in ((res, True), (None, True), (res, False)):
        y = bn_add_relu(x, scale, shift, residual, relu, backend="cpp")
        ref = bn_add_relu_ref(x, scale, shift, residual, relu)
        assert y.dtype == dtype and y.shape == x.shape
        torch.testing.assert_close(y, ref, **ELEMENTWISE[dtype])
        # Layout: a channels-last input gives a channels-last output (C == 1 or H*W == 1 are both layouts).
        assert y.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )


@requires_ext
def test_cpp_non_contiguous_inputs():
    base = torch.randn(2, 9, 8, 12)
    x = base[:, ::2, 1:7, ::3]  # (2, 5, 6, 4), strided in every dim
    res = torch.randn(2, 5, 4, 6).transpose(2, 3)
    scale, shift = (torch.rand(10) + 0.5)[::2], torch.randn(5)
    assert not x.is_contiguous() and not res.is_contiguous() and not scale.is_contiguous()
    y = bn_add_relu(x, scale, shift, res, backend="cpp")
    torch.testing.assert_close(y, bn_add_relu_ref(x, scale, shift, res), **ELEMENTWISE[torch.float32])


@requires_ext
def test_automatic_choice_on_cpu_is_cpp():
    dispatcher, example = REGISTRY["bn_add_relu"]
    assert dispatcher.choose(*example(torch.device("cpu"))).name == "cpp"


def test_backend_cuda_on_cpu_tensors_raises_with_reason():
    x, scale, shift, res = make_inputs((1, 3, 4, 4), torch.float32)
    if EMULATION:  # the emulated cuda backend takes exactly CPU tensors, and only when asked for
        torch.testing.assert_close(
            bn_add_relu(x, scale, shift, res, backend="cuda"), bn_add_relu_ref(x, scale, shift, res)
        )
        return
    with pytest.raises(BackendError, match="not CUDA tensors"):
        bn_add_relu(x, scale, shift, res, backend="cuda")


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_bad_inputs_name_the_argument(backend):
    if backend == "cpp" and not _ext.extension_available():
        pytest.skip("rsn_fast._C not built")
    x, scale, shift, res = make_inputs((2, 4, 5, 5), torch.float32)
    with pytest.raises(ValueError, match="'x'.*\\(N, C, H, W\\)"):
        bn_add_relu(x[0], scale, shift, backend=backend)
    with pytest.raises(ValueError, match="'scale'.*\\(4,\\)"):
        bn_add_relu(x, scale[:3], shift, backend=backend)
    with pytest.raises(ValueError, match="'shift'"):
        bn_add_relu(x, scale, torch.randn(2, 2), backend=backend)
    with pytest.raises(ValueError, match="'residual'.*shape"):
        bn_add_relu(x, scale, shift, res[:, :2], backend=backend)
    with pytest.raises(ValueError, match="'residual'.*dtype"):
        bn_add_relu(x, scale, shift, res.half(), backend=backend)
    # The meta device stands in for a second device on a machine without a GPU.
    with pytest.raises(ValueError, match="'scale' is on meta"):
        bn_add_relu(x, scale.to("meta"), shift, backend=backend)
    with pytest.raises(ValueError, match="'residual' is on meta"):
        bn_add_relu(x, scale, shift, res.to("meta"), backend=backend)


@requires_ext
def test_compiled_op_checks_name_the_argument():
    """The C++ checks (for direct torch.ops calls) name the argument too."""
    x, scale, shift, res = make_inputs((2, 4, 5, 5), torch.float32)
    op = torch.ops.rsn_fast.bn_add_relu
    with pytest.raises(ValueError, match="'x' must have 4 dimensions"):
        op(x[0], scale, shift, None, True)
    with pytest.raises(ValueError, match="'scale' must have shape \\(C,\\) = \\(4,\\)"):
        op(x, scale[:3], shift, None, True)
    with pytest.raises(ValueError, match="'residual' must have the dtype"):
        op(x, scale, shift, res.double(), True)
    with pytest.raises(ValueError, match="'x' must be float32, float16 or bfloat16"):
        op(x.double(), scale, shift, None, True)


@requires_ext
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x, scale, shift, res = make_inputs((2, 5, 3, 4), torch.float32, channels_last=channels_last)
    op = torch.ops.rsn_fast.bn_add_relu.default
    torch.library.opcheck(op, (x, scale, shift, res, True))
    torch.library.opcheck(op, (x.half(), scale, shift, None, False))
    grad_args = [t.clone().requires_grad_() for t in (x, scale, shift, res)]
    torch.library.opcheck(op, (*grad_args, True))


@requires_ext
def test_cpp_backward_matches_reference():
    x, scale, shift, res = make_inputs((2, 6, 5, 3), torch.float32)
    upstream = torch.randn(2, 6, 5, 3)
    grads = {}
    for backend in ("cpp", "reference"):
        leaves = [t.clone().requires_grad_() for t in (x, scale, shift, res)]
        y = bn_add_relu(*leaves, backend=backend)
        # .sum() gives an expanded (stride-0) gradient; the random one a dense one.
        (y.sum() + (y * upstream).sum()).backward()
        grads[backend] = [t.grad for t in leaves]
    for name, a, b in zip(("x", "scale", "shift", "residual"), grads["cpp"], grads["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"grad {name}: {m}")


class _Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.register_buffer("scale", torch.rand(c) + 0.5)
        self.register_buffer("shift", torch.randn(c))

    def forward(self, x):
        return bn_add_relu(self.conv(x), self.scale, self.shift, x)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_torch_compile_fullgraph(backend, monkeypatch):
    if backend == "cpp" and not _ext.extension_available():
        pytest.skip("rsn_fast._C not built")
    monkeypatch.setenv("RSN_FAST_BACKEND", backend)
    torch._dynamo.reset()
    block = _Block(6).eval()
    x = torch.randn(2, 6, 7, 5)
    with torch.no_grad():
        expected = block(x)
        compiled = torch.compile(block, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), expected)
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@needs_cuda_backend
@requires_ext
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(4, 64, 33, 17)])
def test_cuda_matches_reference(shape, dtype, channels_last):
    x, scale, shift, res = make_inputs(shape, dtype, device=CUDA_DEVICE, channels_last=channels_last)
    for residual, relu in ((res, True), (None, True), (res, False)):
        y = bn_add_relu(x, scale, shift, residual, relu, backend="cuda")
        ref = bn_add_relu_ref(x, scale, shift, residual, relu)
        torch.testing.assert_close(y, ref, **ELEMENTWISE[dtype])
        assert y.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
    # automatic dispatch never picks the (slow) emulated kernel
    assert REGISTRY["bn_add_relu"][0].choose(x, scale, shift, res).name == ("cpp" if EMULATION else "cuda")


@needs_cuda_backend
@requires_ext
def test_cuda_opcheck_and_non_contiguous():
    x, scale, shift, res = make_inputs((2, 9, 8, 12), torch.float16, device=CUDA_DEVICE)
    xs, rs = x[:, ::2, 1:7, ::3], res[:, :5, 2:8, 1::3]  # both (2, 5, 6, 4), strided
    y = bn_add_relu(xs, scale[:5], shift[:5], rs, backend="cuda")
    torch.testing.assert_close(y, bn_add_relu_ref(xs, scale[:5], shift[:5], rs), **ELEMENTWISE[torch.float16])
    op = torch.ops.rsn_fast.bn_add_relu_emulated_cuda if EMULATION else torch.ops.rsn_fast.bn_add_relu
    torch.library.opcheck(op.default, (x, scale, shift, res, True))
