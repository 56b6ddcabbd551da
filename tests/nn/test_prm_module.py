"""PoseRefineMachine with the fused spatial gate: fused (reference op / Triton) vs the eager modules (outputs, every
gradient, running statistics, batch counters), the conventions that fall back to eager math, and state dicts
shared by the module and the model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from rsn_fast.nn import PoseRefineMachine
from tests.conftest import TRITON_INTERPRET

ROOT = Path(__file__).resolve().parents[2]
GPU_TRITON = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
needs_triton = pytest.mark.skipif(
    not (TRITON_INTERPRET or GPU_TRITON), reason="Triton needs a GPU with cc >= 8.0 or TRITON_INTERPRET=1"
)


def _randomise(m: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics (fresh modules have 1/0/0/1)."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.3)
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def _eager_spatial_gate(m: PoseRefineMachine, o1, o2, u):
    """The eager composition of the MMPose module (what ``_spatial_gate`` computed before fusing)."""
    return o1 * (1 + o2 * m.bottom_path[2](m.bottom_path[1](u)))


class _Eager(nn.Module):
    """Wraps a PRM so that its spatial gate runs on the eager modules (same parameters)."""

    def __init__(self, m: PoseRefineMachine) -> None:
        super().__init__()
        self.m = m

    def forward(self, x):
        o1 = self.m.conv_bn_relu_prm_1(x)
        return _eager_spatial_gate(self.m, o1, self.m.channel_weights(o1), self.m.spatial_input(o1))


def _step(model: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_()
    out = model(x)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(out, [x, *params], grad)
    return out.detach(), grads


def _buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items() if "running" in k or "num_batches" in k}


def _assert_same_step(a: nn.Module, b: nn.Module, x, grad, rtol=1e-5, atol=1e-5):
    out_a, g_a = _step(a, x, grad)
    out_b, g_b = _step(b, x, grad)
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol)
    for i, (ga, gb) in enumerate(zip(g_a, g_b)):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol, msg=lambda s, i=i: f"gradient {i}: {s}")
    buf_a, buf_b = _buffers(a), _buffers(b)
    assert [k.removeprefix("m.") for k in buf_a] == [k.removeprefix("m.") for k in buf_b]
    for (ka, va), vb in zip(buf_a.items(), buf_b.values()):
        torch.testing.assert_close(
            va.float(), vb.float(), rtol=rtol, atol=atol, msg=lambda s, ka=ka: f"{ka}: {s}"
        )


@pytest.mark.parametrize("variant", ["paper", "mmpose"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_reference_matches_eager_modules(variant, training):
    m = _randomise(PoseRefineMachine(6, variant, backend="reference")).train(training)
    eager = _Eager(copy.deepcopy(m)).train(training)
    x, grad = torch.randn(3, 6, 11, 9), torch.randn(3, 6, 11, 9)
    assert m._fused_gate_bns(x, x) is not None  # the fused op runs, not the eager fallback
    _assert_same_step(m, eager, x, grad)
    if training:
        assert m.bottom_path[1].depthwise_conv.bn.num_batches_tracked.item() == 1
        assert m.bottom_path[1].pointwise_conv.bn.num_batches_tracked.item() == 1


@needs_triton
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_triton_module_matches_reference_module(training, channels_last):
    device = "cpu" if TRITON_INTERPRET else "cuda"
    ref = _randomise(PoseRefineMachine(5, "mmpose", kernel_size=5, backend="reference")).to(device)
    tri = copy.deepcopy(ref)
    tri.backend = "triton"
    ref.train(training)
    tri.train(training)
    x = torch.randn(2, 5, 9, 7, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    _assert_same_step(tri, ref, x, torch.randn(2, 5, 9, 7, device=device), rtol=1e-4, atol=1e-4)


def test_conventions_the_op_does_not_cover_fall_back_to_eager():
    x = torch.randn(2, 4, 7, 6)
    m = PoseRefineMachine(4, "paper")
    assert m._fused_gate_bns(x, x) is not None
    cases = {
        "momentum": lambda m: setattr(m.bottom_path[1].pointwise_conv.bn, "momentum", 0.2),
        "cumulative": lambda m: setattr(m.bottom_path[1].depthwise_conv.bn, "momentum", None),
        "eps": lambda m: setattr(m.bottom_path[1].depthwise_conv.bn, "eps", 1e-3),
        "no running stats": lambda m: setattr(
            m.bottom_path[1].pointwise_conv.bn, "track_running_stats", False
        ),
        "mixed modes": lambda m: m.bottom_path[1].pointwise_conv.bn.eval(),
        "bias": lambda m: setattr(m.bottom_path[1].depthwise_conv.conv, "bias", nn.Parameter(torch.randn(4))),
    }
    for name, change in cases.items():
        mm = _randomise(copy.deepcopy(m))
        change(mm)
        assert mm._fused_gate_bns(x, x) is None, name
        expected = _Eager(copy.deepcopy(mm))(x)
        torch.testing.assert_close(mm(x), expected, msg=lambda s, name=name: f"{name}: {s}")
    off = PoseRefineMachine(4, "official")
    assert off._fused_gate_bns(x, x) is None


def test_state_dict_moves_between_module_and_model():
    from rsn_fast.models import build_model

    model = build_model(str(ROOT / "configs" / "rsn18_coco_256x192_prm.yaml"))
    prms = {n: mod for n, mod in model.named_modules() if isinstance(mod, PoseRefineMachine)}
    assert prms, "the PRM config builds no PoseRefineMachine"
    name, inner = next(iter(prms.items()))
    _randomise(inner)
    sd = {k.removeprefix(name + "."): v for k, v in model.state_dict().items() if k.startswith(name + ".")}
    standalone = PoseRefineMachine(inner.channels, inner.variant, backend="reference")
    standalone.load_state_dict(sd, strict=True)
    standalone.eval()
    inner.eval()
    x = torch.randn(2, inner.channels, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), inner(x))
    # and back: the standalone module's state dict loads into the model's
    standalone.bottom_path[1].pointwise_conv.bn.running_var.fill_(2.0)
    inner.load_state_dict(standalone.state_dict(), strict=True)
    assert torch.equal(inner.bottom_path[1].pointwise_conv.bn.running_var, torch.full((1,), 2.0))
