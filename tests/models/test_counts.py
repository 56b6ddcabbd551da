"""Parameter and MAC counts (RSN_SPEC 13.2), the summary tool, and the ablation variants (paper Tables 2-4)."""

import functools
import json
import os

import pytest
import torch

from rsn_fast.config import ModelConfig, load_config
from rsn_fast.models import build_model
from rsn_fast.models.blocks import block_macs_per_pixel, branch_width
from rsn_fast.models.complexity import count_gmacs, count_params
from rsn_fast.tools import summary

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
R50 = [3, 4, 6, 3]

# Ablation FLOPs must stay within this fraction of the 4-branch RSB model's (integer branch widths; measured
# worst case 0.8% for 6 branches on RSN-50).
ABLATION_FLOPS_RTOL = 0.015


def _meta(**kw):
    with torch.device("meta"):
        return build_model(ModelConfig(**kw))


@pytest.mark.parametrize(
    "config,params",
    [
        ("rsn18_coco_256x192", 9_144_936),
        ("rsn50_coco_256x192", 19_328_584),
        ("2xrsn50_coco_256x192", 39_261_904),
        ("3xrsn50_coco_256x192", 59_195_224),
        ("4xrsn50_coco_256x192", 79_128_544),
        ("4xrsn50_coco_384x288", 79_128_544),
    ],
)
def test_param_counts_equal_spec(config, params):
    with torch.device("meta"):
        model = build_model(os.path.join(CONFIGS, f"{config}.yaml"))
    assert count_params(model) == params


def test_rsn18_parts_and_gmacs():
    model = _meta()
    assert count_params(model.backbone) == 8_723_936
    assert count_params(model.head) == 421_000
    assert round(count_gmacs(model, (192, 256)), 3) == 2.245


def test_summary_cli_json_last_line(capsys):
    assert summary.main([os.path.join(CONFIGS, "rsn50_coco_256x192.yaml"), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    info = json.loads(last)
    assert info["params"] == 19_328_584
    assert abs(info["gmacs"] - 4.068) < 1e-3


def test_resnet18_baseline_counts():
    # OFF exps/Res18.coco: 8.56 M params with conv biases, 2.065 GMACs (spec 13.2). Without biases: 8,549,320.
    model = _meta(arch="resnet")
    assert count_params(model) == 8_549_320
    assert round(count_gmacs(model, (192, 256)), 3) == 2.065
    assert "backbone.multi_stage_rsn.0.downsample.layer2.0.conv_bn_relu2.conv.weight" in model.state_dict()


def test_branch_width_rule():
    assert [branch_width(c, c) for c in (64, 128, 256, 512)] == [26, 52, 104, 208]
    assert branch_width(64, 128) == 26  # from the input channels (spec 4)
    for n in (2, 3, 5, 6):
        b = branch_width(256, 256, n)
        ref = block_macs_per_pixel(256, 256, 104, 4, "rsb")
        err = abs(block_macs_per_pixel(256, 256, b, n, "rsb") - ref)
        for other in (b - 1, b + 1):
            assert err <= abs(block_macs_per_pixel(256, 256, other, n, "rsb") - ref)
    assert branch_width(256, 256, 2) > 104 > branch_width(256, 256, 6)


@functools.lru_cache
def _gmacs(blocks: tuple, **kw) -> float:
    # Built on the CPU (faster than building under torch.device("meta")); counted on a meta copy.
    return count_gmacs(build_model(ModelConfig(num_blocks=list(blocks), **kw)), (192, 256))


@pytest.mark.parametrize(
    "blocks,kw",
    [((2, 2, 2, 2), dict(num_steps=n)) for n in (2, 3, 5, 6)]
    + [((2, 2, 2, 2), dict(block=b)) for b in ("baseline1", "baseline2")]
    + [(tuple(R50), dict(num_steps=n)) for n in (2, 6)]
    + [(tuple(R50), dict(block="baseline2"))],
)
def test_ablation_flops_about_equal(blocks, kw):
    ref = _gmacs(blocks)
    got = _gmacs(blocks, **kw)
    assert abs(got - ref) / ref < ABLATION_FLOPS_RTOL, (kw, got, ref)


@pytest.mark.parametrize(
    "config", ["ablation_branches_rsn18", "ablation_baseline1_rsn18", "ablation_baseline2_rsn18",
               "ablation_attention_se", "ablation_attention_cbam", "res18_coco_256x192", "rsn18_coco_256x192_prm"]
)  # fmt: skip
def test_ablation_configs_build_and_train_step(config):
    cfg = load_config(os.path.join(CONFIGS, f"{config}.yaml"))
    cfg.model.num_blocks = [1, 1, 1, 1]  # keep the CPU test small; the structure per block is what changes
    model = build_model(cfg).train()
    outs = model(torch.randn(2, 3, 64, 64))
    assert len(outs) == 4 and outs[-1].shape == (2, 17, 16, 16)
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_baseline1_has_no_intra_level_sums():
    """Baseline1 = the RSB without the sums from the previous branch: same weights, different output; with the
    previous-branch outputs zeroed the RSB and Baseline1 agree."""
    from rsn_fast.models.blocks import ResidualStepsBlock

    rsb = ResidualStepsBlock(64, 64).eval()
    b1 = ResidualStepsBlock(64, 64, block="baseline1").eval()
    b1.load_state_dict(rsb.state_dict())
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(rsb(x), b1(x))
        # Branch i of Baseline1 is a plain chain of i convs on its split.
        s = torch.chunk(b1.conv_bn_relu1(x), 4, dim=1)
        chain = s[2]
        for j in range(1, 4):
            chain = getattr(b1, f"conv_bn_relu2_3_{j}")(chain)
        ys = []
        for i in range(1, 5):
            y = s[i - 1]
            for j in range(1, i + 1):
                y = getattr(b1, f"conv_bn_relu2_{i}_{j}")(y)
            ys.append(y)
        torch.testing.assert_close(ys[2], chain)
        torch.testing.assert_close(b1(x), torch.relu(b1.conv_bn3(torch.cat(ys, 1)) + x))
    b2 = ResidualStepsBlock(64, 64, block="baseline2")
    assert sorted(n for n, _ in b2.named_children() if n.startswith("conv_bn_relu2_4_")) == [
        "conv_bn_relu2_4_1",
        "conv_bn_relu2_4_2",
        "conv_bn_relu2_4_3",
    ]
