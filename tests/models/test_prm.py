"""PoseRefineMachine: key names and shapes (RSN_SPEC 9, 14.2), output formula, placement in the model."""

import pytest
import torch
import torch.nn.functional as F

from rsn_fast.config import ModelConfig
from rsn_fast.models import build_model
from rsn_fast.nn import PoseRefineMachine

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _cm(prefix, shape):
    out = {f"{prefix}.conv.weight": shape}
    out.update({f"{prefix}.bn.{b}": [] if b == "num_batches_tracked" else [shape[0]] for b in BN})
    return out


def mmpose_prm_table(c):
    """Spec 14.2, written out."""
    t = _cm("conv_bn_relu_prm_1", [c, c, 3, 3])
    for i in (0, 3):
        t[f"middle_path.{i}.weight"] = [c, c]
        t[f"middle_path.{i}.bias"] = [c]
        t.update({f"middle_path.{i + 1}.{b}": [] if b == "num_batches_tracked" else [c] for b in BN})
    t.update(_cm("bottom_path.0", [c, c, 1, 1]))
    t.update(_cm("bottom_path.1.depthwise_conv", [c, 1, 9, 9]))
    t.update(_cm("bottom_path.1.pointwise_conv", [1, c, 1, 1]))
    return t


def official_prm_table(k):
    t = _cm("conv_bn_relu_prm_1", [k, k, 3, 3])
    for name in ("2_1", "2_2", "3_1"):
        t.update(_cm(f"conv_bn_relu_prm_{name}", [k, k, 1, 1]))
    t.update(_cm("conv_bn_relu_prm_3_2", [k, 1, 9, 9]))
    return t


@pytest.mark.parametrize(
    "variant,c,params", [("mmpose", 17, 5068), ("paper", 256, 810498), ("official", 17, 5015)]
)
def test_prm_keys_shapes_and_params(variant, c, params):
    prm = PoseRefineMachine(c, variant)
    table = official_prm_table(c) if variant == "official" else mmpose_prm_table(c)
    sd = prm.state_dict()
    assert sorted(sd) == sorted(table)
    assert {k: list(v.shape) for k, v in sd.items()} == table
    # 5068 and 5100 (with the official conv biases: 5015 + 5*17) are spec 9's cross-checked counts.
    assert sum(p.numel() for p in prm.parameters()) == params


def _randomize(module):
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("running_var", "bn.weight")) or (".1.weight" in name or ".4.weight" in name):
                t.copy_(torch.rand_like(t) + 0.5)
            else:
                t.copy_(torch.randn_like(t) * 0.3)


def _bn(sd, p, x):
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"]
    )


def _cbr(sd, p, x, pad=0, groups=1):
    return F.relu(_bn(sd, f"{p}.bn", F.conv2d(x, sd[f"{p}.conv.weight"], padding=pad, groups=groups)))


def reference_prm(sd, x, variant):
    """Spec 9.1 / 9.2 written with functional ops on the state dict (eval mode)."""
    c = x.shape[1]
    o1 = _cbr(sd, "conv_bn_relu_prm_1", x, pad=1)
    if variant == "official":
        p = o1.mean(dim=(2, 3), keepdim=True)
        o2 = torch.sigmoid(_cbr(sd, "conv_bn_relu_prm_2_2", _cbr(sd, "conv_bn_relu_prm_2_1", p)))
        o3 = torch.sigmoid(
            _cbr(sd, "conv_bn_relu_prm_3_2", _cbr(sd, "conv_bn_relu_prm_3_1", o1), pad=4, groups=c)
        )
        assert o3.shape == x.shape
    else:
        h = o1.mean(dim=(2, 3))
        h = F.relu(
            _bn(sd, "middle_path.1", F.linear(h, sd["middle_path.0.weight"], sd["middle_path.0.bias"]))
        )
        h = F.relu(
            _bn(sd, "middle_path.4", F.linear(h, sd["middle_path.3.weight"], sd["middle_path.3.bias"]))
        )
        o2 = torch.sigmoid(h)[:, :, None, None]
        u = _cbr(sd, "bottom_path.0", o1)
        u = _cbr(sd, "bottom_path.1.depthwise_conv", u, pad=4, groups=c)
        o3 = torch.sigmoid(_cbr(sd, "bottom_path.1.pointwise_conv", u))
        assert o3.shape == (x.shape[0], 1, *x.shape[2:])
    return o1 * (1 + o2 * o3)


@pytest.mark.parametrize("variant", ["paper", "mmpose", "official"])
def test_prm_output_formula(variant):
    c = 24 if variant == "paper" else 7
    prm = PoseRefineMachine(c, variant).eval()
    _randomize(prm)
    x = torch.randn(2, c, 13, 11)
    with torch.no_grad():
        got = prm(x)
        expected = reference_prm(prm.state_dict(), x, variant)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_spatial_gate_is_the_swappable_part(monkeypatch):
    prm = PoseRefineMachine(8, "paper").eval()
    x = torch.randn(1, 8, 9, 9)
    seen = {}

    def gate(self, o1, o2, u):
        seen["shapes"] = (tuple(o1.shape), tuple(o2.shape), tuple(u.shape))
        return o1

    monkeypatch.setattr(PoseRefineMachine, "_spatial_gate", gate)
    with torch.no_grad():
        out = prm(x)
        torch.testing.assert_close(out, prm.conv_bn_relu_prm_1(x))
    assert seen["shapes"] == ((1, 8, 9, 9), (1, 8, 1, 1), (1, 8, 9, 9))


def test_prm_rejects_unknown_variant():
    with pytest.raises(ValueError, match="one of .*'paper'.*got 'fancy'"):
        PoseRefineMachine(4, "fancy")


def _prm_model(variant, k=5, stages=1):
    cfg = ModelConfig(
        num_blocks=[1, 1, 1, 1], num_keypoints=k, num_stages=stages, attention="prm", prm_variant=variant
    )
    return build_model(cfg).eval()


def test_placement_paper_on_last_unit_features():
    model = _prm_model("paper", stages=2)
    keys = [k for k in model.state_dict() if ".prm." in k]
    assert keys and all(k.startswith("head.prm.") for k in keys)
    assert model.state_dict()["head.prm.conv_bn_relu_prm_1.conv.weight"].shape == (256, 256, 3, 3)
    _randomize(model.head.prm)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(x)
        expected = model.head.predict_layers[7](model.head.prm(feats[7]), (16, 16))
        torch.testing.assert_close(model(x), expected)


def test_placement_mmpose_in_every_predict_layer():
    model = _prm_model("mmpose", k=5, stages=2)
    sd = model.state_dict()
    for i in range(8):
        assert sd[f"head.predict_layers.{i}.prm.bottom_path.1.pointwise_conv.conv.weight"].shape == (
            1,
            5,
            1,
            1,
        )
    assert not any(k.startswith("head.prm.") for k in sd)
    pl = model.head.predict_layers[7]
    _randomize(pl.prm)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feat = model.backbone(x)[7]
        resized = F.interpolate(pl.conv_layers(feat), size=(16, 16), mode="bilinear", align_corners=True)
        torch.testing.assert_close(model(x), reference_prm(pl.prm.state_dict(), resized, "mmpose"))


def test_placement_official_on_final_heatmap():
    model = _prm_model("official", k=5)
    sd = model.state_dict()
    assert sd["head.prm.conv_bn_relu_prm_3_2.conv.weight"].shape == (5, 1, 9, 9)
    assert not any(k.endswith("conv.bias") for k in sd)
    _randomize(model.head.prm)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        hm = model.head.predict_layers[3](model.backbone(x)[3], (16, 16))
        torch.testing.assert_close(model(x), reference_prm(model.head.prm.state_dict(), hm, "official"))
