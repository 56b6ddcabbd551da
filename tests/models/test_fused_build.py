"""model.fused: build_model decides plain or fused; fused models keep MMPose's keys AND parameter order, so
checkpoints and optimizer states move between the two."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rsn_fast.config import ModelConfig, load_config
from rsn_fast.models import build_model
from rsn_fast.models.builder import fused_backend_of, resolve_fused_backend
from rsn_fast.nn import FusedRSB, PoseRefineMachine, convert
from rsn_fast.nn.conv_module import ConvModule


def _small(**kw) -> ModelConfig:
    return ModelConfig(input_size=(32, 32), **kw)


def test_config_keys_defaults_and_off_alias():
    cfg = load_config("configs/demo_synthetic.yaml")
    assert cfg.model.fused == "auto" and cfg.model.fused_check == "error"
    # YAML reads a bare `off` as false; the override must still mean "off"
    cfg = load_config("configs/demo_synthetic.yaml", ["model.fused=off", "model.fused_check=off"])
    assert cfg.model.fused == "off" and cfg.model.fused_check == "off"
    with pytest.raises(ValueError, match="model.fused must be one of"):
        load_config("configs/demo_synthetic.yaml", ["model.fused=trito"])
    with pytest.raises(ValueError, match="model.fused_check must be one of"):
        load_config("configs/demo_synthetic.yaml", ["model.fused_check=warn"])


def test_auto_and_off_build_the_plain_model_on_cpu():
    for mode in ("auto", "off"):
        for device in (None, "cpu"):
            model = build_model(_small(fused=mode), device=device)
            assert fused_backend_of(model) is None
            assert not any(isinstance(m, FusedRSB) for m in model.modules())


def test_reference_fuses_rsbs_prm_and_keeps_keys_and_order():
    plain = build_model(_small(fused="off", attention="prm"))
    fused = build_model(_small(fused="reference", attention="prm"), device="cpu")
    assert fused_backend_of(fused) == "reference"
    assert sum(isinstance(m, FusedRSB) for m in fused.modules()) == 8
    prms = [m for m in fused.modules() if isinstance(m, PoseRefineMachine)]
    assert prms and all(m.backend == "reference" for m in prms)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in plain.named_parameters()]
    fused.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(fused.state_dict(), strict=True)


def test_official_prm_depthwise_becomes_the_fused_op():
    from rsn_fast.nn import DepthwiseConv2d

    plain = build_model(_small(fused="off", attention="prm", prm_variant="official"))
    fused = build_model(_small(fused="reference", attention="prm", prm_variant="official"), device="cpu")
    dws = [m for m in fused.modules() if isinstance(m, DepthwiseConv2d)]
    assert dws and all(m.backend == "reference" for m in dws)
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict(), strict=True)


def test_explicit_backend_that_cannot_run_fails_naming_op_and_reason(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(
        ValueError, match=r"model.fused=triton cannot run on cpu: rsb_conv_bnact_stats: .*CUDA"
    ):
        build_model(_small(fused="triton"), device="cpu")
    with pytest.raises(ValueError, match="must be auto, off"):
        resolve_fused_backend("fast", "cpu")


class _Conv(nn.Module):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class _DownsampleLastRSB(nn.Module):
    """An RSB-like block that registers its downsample after the branch convs (the parameter order a
    ``convert()`` that puts the downsample first would change)."""

    def __init__(self, cin, cout, stride, b=6):
        super().__init__()
        self.conv_bn_relu1 = _Conv(cin, 4 * b, 1, stride)
        for i in range(4):
            for j in range(i + 1):
                setattr(self, f"conv_bn_relu2_{i + 1}_{j + 1}", _Conv(b, b, 3))
        self.conv_bn3 = _Conv(4 * b, cout, 1)
        self.downsample = _Conv(cin, cout, 1, stride)
        self.b = b

    def forward(self, x):
        s = torch.split(torch.relu(self.conv_bn_relu1(x)), self.b, 1)
        outs, prev = [], []
        for i in range(4):
            cur = []
            for j in range(i + 1):
                inp = (s[i] if j == 0 else cur[-1]) + (prev[j] if j < i else 0)
                cur.append(torch.relu(getattr(self, f"conv_bn_relu2_{i + 1}_{j + 1}")(inp)))
            outs.append(cur[-1])
            prev = cur
        return torch.relu(self.conv_bn3(torch.cat(outs, 1)) + self.downsample(x))


def _adam_steps(model, opt, x, steps):
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def _net():
    # float64: the fused BN statistics (sum / sum of squares) differ from BatchNorm2d's in float32 rounding,
    # which Adam's normalised steps would magnify; the test is about which state meets which parameter
    return nn.Sequential(_DownsampleLastRSB(5, 8, 2), nn.Sequential(_DownsampleLastRSB(8, 8, 1))).double()


@pytest.mark.parametrize("direction", ["plain_to_fused", "fused_to_plain"])
def test_optimizer_state_resumes_across_convert(direction):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8, 7, dtype=torch.float64)
    base = _net()
    keys = list(base.state_dict())
    names = [n for n, _ in base.named_parameters()]
    # an uninterrupted plain run of 2 + 2 Adam steps
    straight = copy.deepcopy(base)
    opt = torch.optim.Adam(straight.parameters(), lr=1e-2)
    _adam_steps(straight, opt, x, 4)
    # 2 steps on one side, save model + optimizer, resume on the other side for 2 more
    first = copy.deepcopy(base)
    if direction == "fused_to_plain":
        first = convert(first, backend="reference")
    opt = torch.optim.Adam(first.parameters(), lr=1e-2)
    _adam_steps(first, opt, x, 2)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    second = _net()
    if direction == "plain_to_fused":
        second = convert(second, backend="reference")
    assert list(second.state_dict()) == keys
    assert [n for n, _ in second.named_parameters()] == names
    second.load_state_dict(saved_model, strict=True)
    opt2 = torch.optim.Adam(second.parameters(), lr=1e-2)
    opt2.load_state_dict(saved_opt)
    _adam_steps(second, opt2, x, 2)
    for (n, a), b in zip(straight.named_parameters(), second.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10, msg=lambda m, n=n: f"{n}: {m}")


def test_conv_module_old_import_path():
    from rsn_fast.nn.prm import ConvModule as OldPath

    assert OldPath is ConvModule


def test_fused_eval_is_the_folded_path_and_matches_the_plain_model(monkeypatch):
    from rsn_fast.ops.rsb import reference

    plain = build_model(_small(fused="off"))
    for m in plain.modules():  # non-trivial running statistics, so folding BN changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    fused = build_model(_small(fused="reference"), device="cpu")
    fused.load_state_dict(plain.state_dict())
    plain.eval()
    fused.eval()
    calls = []
    stats_fwd = reference.conv_bnact_stats_forward
    monkeypatch.setattr(
        reference,
        "conv_bnact_stats_forward",
        lambda *a: calls.append((a[4] is not None, a[9])) or stats_fwd(*a),
    )
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref, out = plain(x), fused(x)
    # every fused conv ran with a folded bias and without batch statistics
    assert calls and all(has_bias and not stats for has_bias, stats in calls)
    for a, b in zip(out, ref):
        # folding BN into the weights rounds differently in fp32; ~100 convs deep that is ~1e-4 of the scale
        assert (a - b).abs().max() <= 1e-3 * b.abs().max(), (a - b).abs().max()
