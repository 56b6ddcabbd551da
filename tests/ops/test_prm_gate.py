"""PRM spatial gate: reference vs nn-module composition, Triton and CUDA vs reference (output, every gradient,
running statistics), training and eval, dtypes, layouts, determinism, poisoned outputs, bad inputs, opcheck and
torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsn_fast.ops import BackendError
from rsn_fast.ops.prm_gate import prm_spatial_gate
from tests.backends import CUDA_DEVICE, EMULATION, needs_cuda_backend
from tests.conftest import TRITON_INTERPRET
from tests.tolerances import assert_max_within_torch_error, assert_within_torch_error, reduction_ulps

GPU_TRITON = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
TRITON_DEVICE = "cpu" if TRITON_INTERPRET else "cuda"
needs_cuda = needs_cuda_backend
needs_triton = pytest.mark.skipif(
    not (TRITON_INTERPRET or GPU_TRITON), reason="Triton needs a GPU with cc >= 8.0 or TRITON_INTERPRET=1"
)
ACT = ("o1", "o2", "u")
PARAMS = ("dw_weight", "bn_d_weight", "bn_d_bias", "pw_weight", "bn_p_weight", "bn_p_bias")
BUFS = ("bn_d_running_mean", "bn_d_running_var", "bn_p_running_mean", "bn_p_running_var")


def make_inputs(N, C, H, W, k=9, dtype=torch.float32, device="cpu", channels_last=False):
    """Activations in dtype; parameters like a real module (weights in dtype, BN affine/buffers float32)."""
    o1, u = (
        torch.randn(N, C, H, W, dtype=dtype, device=device),
        torch.randn(N, C, H, W, dtype=dtype, device=device),
    )
    if channels_last:
        o1, u = o1.to(memory_format=torch.channels_last), u.to(memory_format=torch.channels_last)
    acts = {"o1": o1, "o2": torch.rand(N, C, 1, 1, device=device).to(dtype), "u": u}
    f32 = {"device": device, "dtype": torch.float32}
    params = {
        "dw_weight": (torch.randn(C, 1, k, k, device=device) / k).to(dtype),
        "bn_d_weight": torch.rand(C, **f32) + 0.5,
        "bn_d_bias": torch.randn(C, **f32) * 0.5,
        "pw_weight": (torch.randn(1, C, 1, 1, device=device) / C**0.5).to(dtype),
        "bn_p_weight": torch.rand(1, **f32) + 0.5,
        "bn_p_bias": torch.randn(1, **f32) * 0.5 + 0.3,
    }
    bufs = {
        "bn_d_running_mean": torch.randn(C, **f32) * 0.1,
        "bn_d_running_var": torch.rand(C, **f32) + 0.5,
        "bn_p_running_mean": torch.randn(1, **f32) * 0.1,
        "bn_p_running_var": torch.rand(1, **f32) + 0.5,
    }
    return acts, params, bufs


def run(acts, params, bufs, training, backend, grad=None, cast=None, device=None):
    """Forward (+ backward with ``grad``; "sum" = y.sum()). Returns (out, grads dict, buffers after)."""

    def conv(t):
        t = t.detach()
        if cast is not None and t.is_floating_point():
            t = t.to(cast if t.dtype != torch.float32 or cast == torch.float64 else torch.float32)
        return t.to(device) if device else t

    a = {k: conv(v).requires_grad_() for k, v in acts.items()}
    p = {k: conv(v).requires_grad_() for k, v in params.items()}
    if cast == torch.float64:
        p = {k: v.double().detach().requires_grad_() for k, v in p.items()}
    b = {k: conv(v).clone() if cast != torch.float64 else conv(v).double().clone() for k, v in bufs.items()}
    out = prm_spatial_gate(**a, **p, **b, training=training, backend=backend)
    grads = {}
    if grad is not None:
        leaves = {**a, **p}
        if isinstance(grad, str):
            gs = torch.autograd.grad(out.sum(), list(leaves.values()))
        else:
            gs = torch.autograd.grad(out, list(leaves.values()), conv(grad).to(out.dtype))
        grads = dict(zip(leaves, gs))
    return out, grads, b


def test_reference_matches_module_composition():
    N, C, H, W = 3, 6, 11, 9
    acts, params, bufs = make_inputs(N, C, H, W, dtype=torch.float64)
    dw = nn.Conv2d(C, C, 9, padding=4, groups=C, bias=False).double()
    bn_d, pw, bn_p = (
        nn.BatchNorm2d(C).double(),
        nn.Conv2d(C, 1, 1, bias=False).double(),
        nn.BatchNorm2d(1).double(),
    )
    with torch.no_grad():
        dw.weight.copy_(params["dw_weight"])
        pw.weight.copy_(params["pw_weight"])
        for bn, tag in ((bn_d, "d"), (bn_p, "p")):
            bn.weight.copy_(params[f"bn_{tag}_weight"])
            bn.bias.copy_(params[f"bn_{tag}_bias"])
            bn.running_mean.copy_(bufs[f"bn_{tag}_running_mean"])
            bn.running_var.copy_(bufs[f"bn_{tag}_running_var"])
    for training in (True, False):
        for m in (dw, bn_d, pw, bn_p):
            m.train(training)
        beta = torch.sigmoid(torch.relu(bn_p(pw(torch.relu(bn_d(dw(acts["u"])))))))
        expected = acts["o1"] * (1 + acts["o2"] * beta)
        out, _, b = run(acts, params, bufs, training, "reference", cast=torch.float64)
        bufs = b
        torch.testing.assert_close(out, expected)
        for tag, bn in (("d", bn_d), ("p", bn_p)):
            torch.testing.assert_close(b[f"bn_{tag}_running_mean"], bn.running_mean)
            torch.testing.assert_close(b[f"bn_{tag}_running_var"], bn.running_var)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_reference_float64(training):
    acts, params, bufs = make_inputs(2, 3, 5, 4, k=3, dtype=torch.float64)
    params = {k: v.double() for k, v in params.items()}
    bufs = {k: v.double() for k, v in bufs.items()}
    names = list(acts) + list(params)

    def f(*xs):
        kw = dict(zip(names, xs))
        return prm_spatial_gate(
            **kw, **{k: v.clone() for k, v in bufs.items()}, training=training, backend="reference"
        )

    inputs = [t.detach().requires_grad_() for t in (*acts.values(), *params.values())]
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


def _compare(
    shape, k, dtype, channels_last, training, upstream="random", device=TRITON_DEVICE, backend="triton"
):
    acts, params, bufs = make_inputs(*shape, k=k, dtype=dtype, device=device, channels_last=channels_last)
    grad = torch.randn(shape, device=device) if upstream == "random" else "sum"
    out, grads, b = run(acts, params, bufs, training, backend, grad=grad)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ex_out, ex_grads, ex_b = run(acts, params, bufs, training, "reference", grad, cast=torch.float64)
    t_out, t_grads, t_b = run(acts, params, bufs, training, "reference", grad=grad)
    assert_within_torch_error(out, ex_out, t_out, "out")
    assert_max_within_torch_error(out, ex_out, t_out, "out (max)")
    for name in grads:
        assert_within_torch_error(grads[name], ex_grads[name], t_grads[name], f"d{name}", dtype=dtype)
        assert_max_within_torch_error(
            grads[name],
            ex_grads[name],
            t_grads[name],
            f"d{name} (max)",
            ulps=_ulps(name, shape, k, grads[name], dtype),
        )
    for name in BUFS:
        assert_within_torch_error(b[name], ex_b[name], t_b[name], name, dtype=dtype)
        assert_max_within_torch_error(
            b[name], ex_b[name], t_b[name], f"{name} (max)", ulps=_ulps(name, shape, k, b[name], dtype)
        )


def _ulps(name, shape, k, t, dtype):
    """Per-element slack of a result (tests.tolerances.reduction_ulps): o1 and u gradients are per-pixel (their
    sums are the gate's C-channel pointwise reduction and the k*k-tap transposed depthwise conv, in fp32); o2's is
    a sum over the H*W pixels of its (n, c); parameter gradients and running statistics are reductions over all
    N*H*W pixels (of a value that itself went through the C-channel reduction); every term is computed in
    the activations' dtype (the float32 BN gradients and statistics of fp16/bf16 math carry its roundings)."""
    N, C, H, W = shape
    n = {"o1": C, "u": C + k * k, "o2": C + H * W}.get(name, C + k * k + N * H * W)
    return reduction_ulps(n, t.dtype, compute=dtype)


@needs_triton
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_triton_matches_reference(training, dtype, channels_last):
    if TRITON_INTERPRET:
        cases = [((3, 17, 15, 13), 5)] if dtype != torch.float32 or channels_last else [((3, 16, 16, 16), 9)]
    else:
        cases = [((3, 256, 64, 48), 9), ((3, 17, 63, 47), 9), ((3, 26, 96, 72), 9), ((1, 17, 64, 48), 9)]
    for shape, k in cases:
        if training and shape[0] == 1 and shape[2] * shape[3] < 2:
            continue
        _compare(shape, k, dtype, channels_last, training)


@needs_cuda
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_matches_reference(training, dtype, channels_last):
    if EMULATION:  # small: still >= 2 blocks along each grid dimension and a partial last tile
        cases = [(2, 17, 15, 13)] + ([] if training else [(1, 9, 7, 5)])
    else:
        cases = [(3, 256, 64, 48), (3, 17, 63, 47), (3, 26, 96, 72)] + ([] if training else [(1, 17, 64, 48)])
    for shape in cases:
        _compare(shape, 9, dtype, channels_last, training, device=CUDA_DEVICE, backend="cuda")
    # stride-0 upstream gradient (y.sum()), a partial last tile (H*W = 195) and a small kernel
    _compare(
        (2, 17, 15, 13), 5, dtype, channels_last, training, upstream="sum", device=CUDA_DEVICE, backend="cuda"
    )


@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_eval_one_kernel_no_grad_and_mixed_layouts(channels_last):
    shape = (1, 9, 15, 13) if EMULATION else (1, 17, 63, 47)
    acts, params, bufs = make_inputs(*shape, k=9, device=CUDA_DEVICE, channels_last=channels_last)
    with torch.no_grad():
        out = prm_spatial_gate(**acts, **params, **bufs, training=False, backend="cuda")
        ref = prm_spatial_gate(**acts, **params, **bufs, training=False, backend="reference")
        assert out.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # u in the other layout than o1: the kernels bring it to o1's
        other = torch.contiguous_format if channels_last else torch.channels_last
        mixed = dict(acts, u=acts["u"].contiguous(memory_format=other))
        out2 = prm_spatial_gate(**mixed, **params, **bufs, training=False, backend="cuda")
        torch.testing.assert_close(out2, ref, rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_is_deterministic(channels_last):
    """Per-block partials summed in a fixed order: two runs give bitwise equal outputs, gradients and stats."""
    shape = (2, 10, 15, 13) if EMULATION else (3, 26, 64, 48)
    acts, params, bufs = make_inputs(
        *shape, dtype=torch.bfloat16, device=CUDA_DEVICE, channels_last=channels_last
    )
    grad = torch.randn(*shape, device=CUDA_DEVICE)
    first = run(acts, params, bufs, True, "cuda", grad=grad)
    second = run(acts, params, bufs, True, "cuda", grad=grad)
    assert torch.equal(first[0], second[0])
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name
    for name in BUFS:
        assert torch.equal(first[2][name], second[2][name]), name


@needs_cuda
def test_cuda_kernel_bad_inputs_name_the_argument():
    ops = torch.ops.rsn_fast
    z = torch.randn(2, 5, 6, 7, device=CUDA_DEVICE)
    with pytest.raises(ValueError, match="'scale_shift'"):
        ops.prm_gate_pointwise_cuda(
            z, torch.randn(2, 4, device=CUDA_DEVICE), torch.randn(5, device=CUDA_DEVICE)
        )
    with pytest.raises(ValueError, match="'pw' must be float32"):
        ops.prm_gate_pointwise_cuda(
            z, torch.randn(2, 5, device=CUDA_DEVICE), torch.randn(5, device=CUDA_DEVICE).half()
        )
    with pytest.raises(ValueError, match="'z' must have 4 dimensions"):
        ops.prm_gate_bn_d_bwd_cuda(
            z[0],
            torch.randn(2, 42, device=CUDA_DEVICE),
            torch.randn(6, 5, device=CUDA_DEVICE),
            z[0, 0, 0, :5],
        )
    with pytest.raises(ValueError, match="'o2'"):
        ops.prm_gate_gate_cuda(
            torch.randn(2, 42, device=CUDA_DEVICE), torch.randn(2, device=CUDA_DEVICE), z, z[:, :3, :1, :1]
        )
    with pytest.raises(ValueError, match="'grad'"):
        ops.prm_gate_gate_bwd_cuda(
            z.half(), z, torch.rand(2, 5, 1, 1, device=CUDA_DEVICE), torch.randn(2, 42, device=CUDA_DEVICE),
            torch.randn(4, device=CUDA_DEVICE),
        )  # fmt: skip


@needs_triton
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_triton_backward_of_sum_and_batch_of_one(training):
    _compare((1 if not training else 2, 5, 9, 7), 3, torch.float32, True, training, upstream="sum")


@needs_triton
def test_triton_eval_one_kernel_no_grad_matches_reference():
    for cl in (False, True):
        acts, params, bufs = make_inputs(1, 17, 15, 13, k=9, device=TRITON_DEVICE, channels_last=cl)
        with torch.no_grad():
            out = prm_spatial_gate(**acts, **params, **bufs, training=False, backend="triton")
            ref = prm_spatial_gate(**acts, **params, **bufs, training=False, backend="reference")
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@needs_triton
def test_triton_poisoned_outputs_are_overwritten(monkeypatch):
    from rsn_fast.ops.depthwise_conv2d import triton as dw_tri
    from rsn_fast.ops.prm_gate import triton as prm_tri

    def poisoned_like(t):
        return torch.full_like(t, float("nan"), memory_format=dw_tri.out_format(t))

    def poisoned(shape, like, memory_format):
        return torch.full(shape, float("nan"), device=like.device, dtype=like.dtype).contiguous(
            memory_format=memory_format
        )

    monkeypatch.setattr(prm_tri, "new_like", poisoned_like)
    monkeypatch.setattr(dw_tri, "new_output", poisoned)
    for training in (True, False):
        acts, params, bufs = make_inputs(2, 6, 9, 7, k=5, device=TRITON_DEVICE, channels_last=training)
        out, grads, b = run(acts, params, bufs, training, "triton", grad=torch.randn(2, 6, 9, 7))
        ref, _, _ = run(acts, params, bufs, training, "reference")
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            out = prm_spatial_gate(**acts, **params, **bufs, training=False, backend="triton")
        assert torch.isfinite(out).all()


@pytest.mark.skipif(
    not TRITON_INTERPRET, reason="opcheck of the Triton op on the CPU needs TRITON_INTERPRET=1"
)
def test_opcheck_triton():
    acts, params, bufs = make_inputs(2, 5, 7, 6, k=3)
    args = [acts["o1"], acts["o2"], acts["u"], params["dw_weight"], params["bn_d_weight"], params["bn_d_bias"],
            bufs["bn_d_running_mean"], bufs["bn_d_running_var"], params["pw_weight"], params["bn_p_weight"],
            params["bn_p_bias"], bufs["bn_p_running_mean"], bufs["bn_p_running_var"]]  # fmt: skip
    args = [
        t.requires_grad_() if t.dtype.is_floating_point and i not in (6, 7, 11, 12) else t
        for i, t in enumerate(args)
    ]
    torch.library.opcheck(torch.ops.rsn_fast.prm_gate_fwd.default, (*args, True, 1e-5, True, "triton"))
    torch.library.opcheck(torch.ops.rsn_fast.prm_gate_fwd.default, (*args, False, 1e-5, True, "triton"))


def test_compile_fullgraph_training_step():
    backend = "triton" if TRITON_INTERPRET else "reference"
    acts, params, bufs = make_inputs(2, 5, 8, 7, k=3)
    p = {k: v.requires_grad_() for k, v in params.items()}
    b_eager = {k: v.clone() for k, v in bufs.items()}

    def step(o1, o2, u, b):
        return prm_spatial_gate(o1, o2, u, **p, **b, training=True, backend=backend).square().sum()

    loss = torch.compile(step, fullgraph=True, backend="aot_eager")(*acts.values(), bufs)
    (g_c,) = torch.autograd.grad(loss, [p["dw_weight"]])
    loss_e = step(*acts.values(), b_eager)
    (g_e,) = torch.autograd.grad(loss_e, [p["dw_weight"]])
    torch.testing.assert_close(loss, loss_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-5)
    for k in BUFS:
        torch.testing.assert_close(bufs[k], b_eager[k])
    assert not torch.equal(bufs["bn_d_running_mean"], make_inputs(2, 5, 8, 7, k=3)[2]["bn_d_running_mean"])


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a, p, b: a.update(u=a["u"][0]), "'u' must be 4-D"),
        (lambda a, p, b: a.update(o1=a["o1"][:, :3]), "'o1'"),
        (lambda a, p, b: a.update(o2=a["o2"][:, :, 0]), "'o2'"),
        (lambda a, p, b: p.update(dw_weight=torch.randn(4, 1, 8, 8)), "'dw_weight'"),
        (lambda a, p, b: p.update(dw_weight=torch.randn(3, 1, 9, 9)), "'dw_weight'"),
        (lambda a, p, b: p.update(pw_weight=torch.randn(4, 1, 1, 1)), "'pw_weight'"),
        (lambda a, p, b: p.update(bn_d_weight=torch.randn(5)), "'bn_d_weight'"),
        (lambda a, p, b: b.update(bn_p_running_var=torch.randn(2)), "'bn_p_running_var'"),
        (lambda a, p, b: a.update(o1=a["o1"].double()), "'o1' has dtype"),
        (lambda a, p, b: a.update(u=a["u"].int(), o1=a["o1"].int()), "'u' must be float"),
        (lambda a, p, b: p.update(bn_d_bias=torch.randn(4, device="meta")), "'bn_d_bias' is on"),
    ],
)
def test_bad_inputs_name_the_argument(change, match):
    acts, params, bufs = make_inputs(2, 4, 6, 5, k=3)
    change(acts, params, bufs)
    with pytest.raises((ValueError, TypeError), match=match):
        prm_spatial_gate(**acts, **params, **bufs, training=True, backend="reference")


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_float32_weights_with_low_precision_activations(backend):
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    acts, params, bufs = make_inputs(2, 6, 9, 7, k=5, dtype=torch.bfloat16, device=device)
    p32 = {k: v.float().requires_grad_() for k, v in params.items()}
    out = prm_spatial_gate(**acts, **p32, **bufs, training=True, backend=backend)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert p32["dw_weight"].grad.dtype == torch.float32 and torch.isfinite(p32["dw_weight"].grad).all()
    ref = prm_spatial_gate(
        **acts, **params, **{k: v.clone() for k, v in bufs.items()}, training=True, backend="reference"
    )
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05)


def test_training_needs_more_than_one_value_and_cuda_backend_reason():
    acts, params, bufs = make_inputs(1, 4, 1, 1, k=3)
    with pytest.raises(ValueError, match="more than 1 value"):
        prm_spatial_gate(**acts, **params, **bufs, training=True, backend="reference")
    acts, params, bufs = make_inputs(2, 4, 6, 5, k=3)
    if not EMULATION:  # the emulated cuda backend takes CPU tensors
        with pytest.raises(BackendError, match="not CUDA tensors"):
            prm_spatial_gate(**acts, **params, **bufs, training=True, backend="cuda")


@needs_triton
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_triton_multi_tile_per_element(training):
    """A shape spanning >= 2 pixel tiles and channel steps (partial last ones) of every PRM kernel, asserted on
    the recorded launches; the output and every gradient element-wise within twice the reference's own error."""
    from rsn_fast.ops._launch import recording
    from rsn_fast.ops.prm_gate import triton as tri
    from tests.launches import assert_multi_tile
    from tests.tolerances import assert_max_within_torch_error

    with recording() as launches:  # small tiles while recording (rsn_fast.ops._launch)
        bp, bc = tri._blocks(64)
        C = bc + bc // 2 + 1
        assert tri._blocks(C) == (bp, bc)
        side = int((1.5 * bp) ** 0.5) + 1  # H * W between 1.5 and 2.5 pixel tiles
        H, W = side, side + 1
        assert (H * W) % bp and H * W > bp
        acts, params, bufs = make_inputs(2, C, H, W, k=3, device=TRITON_DEVICE)
        g = torch.randn(2, C, H, W, device=TRITON_DEVICE)
        with torch.set_grad_enabled(training):  # eval without grad: the one-kernel path
            out, grads, _ = run(acts, params, bufs, training, "triton", grad=g if training else None)
        kernels = ["_pointwise_kernel", "_gate_kernel", "_gate_bwd_kernel", "_bn_d_bwd_kernel"]
        assert_multi_tile(launches, kernels if training else ["_gate_eval_kernel"])
        exact, grads64, _ = run(
            acts, params, bufs, training, "reference", grad=g if training else None, cast=torch.float64
        )
        ref, grads_r, _ = run(acts, params, bufs, training, "reference", grad=g if training else None)
        assert_max_within_torch_error(out, exact, ref, "out")
        for name in grads:
            # parameter gradients are fp32 sums over all N*H*W pixels: allow gamma_n = n u at the result's scale
            ulps = 4 if name in ACT else 2 * H * W
            assert_max_within_torch_error(grads[name], grads64[name], grads_r[name], f"d{name}", ulps=ulps)
