"""Checkpoint layouts and loading, against key tables written from RSN_SPEC 14 (tests/models/spec_tables.py)."""

import pytest
import torch

from rsn_fast.config import ModelConfig
from rsn_fast.models import CheckpointError, build_model, convert_official_state_dict, load_checkpoint
from rsn_fast.tools import convert_checkpoint
from tests.models.spec_tables import mm_table, off_forward, off_table, random_state_dict

R18 = [2, 2, 2, 2]
R50 = [3, 4, 6, 3]


def _meta_model(blocks, stages, k=17):
    with torch.device("meta"):
        return build_model(ModelConfig(num_blocks=blocks, num_stages=stages, num_keypoints=k))


@pytest.mark.parametrize(
    "blocks,stages,entries", [(R18, 1, 690), (R18, 2, None), (R50, 1, 1266), (R50, 2, 2580), (R50, 3, 3894)]
)
def test_state_dict_keys_order_and_shapes_match_spec(blocks, stages, entries):
    table = mm_table(blocks, stages, 17)
    if entries is not None:
        assert len(table) == entries
    sd = _meta_model(blocks, stages).state_dict()
    assert list(sd) == list(table)
    for key, shape in table.items():
        assert list(sd[key].shape) == shape, key


def test_official_table_counts_match_spec():
    assert len(off_table(R18, 1, 17)) + 115 == 805  # + one conv bias per conv
    assert (
        len(off_table(R18, 2, 17)) + len([k for k in off_table(R18, 2, 17) if k.endswith("conv.weight")])
        == 1666
    )


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("flavour", ["mm1", "mm0"])
def test_mmpose_checkpoint_strict_load(tmp_path, stages, flavour):
    sd = random_state_dict(mm_table(R18, stages, 17), gen=torch.Generator().manual_seed(stages))
    if flavour == "mm0":
        # MMPose 0.x: keypoint_head prefix; MM1 files may carry the data preprocessor's mean/std.
        body = {
            (k.replace("head.", "keypoint_head.", 1) if k.startswith("head.") else k): v
            for k, v in sd.items()
        }
    else:
        body = dict(sd)
        body["data_preprocessor.mean"] = torch.ones(1, 3, 1, 1)
        body["data_preprocessor.std"] = torch.ones(1, 3, 1, 1)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": body, "meta": {"epoch": 210}}, path)
    model = build_model(ModelConfig(num_blocks=R18, num_stages=stages))
    load_checkpoint(model, path)
    got = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(got[key], value), key


def test_load_errors_name_the_keys(tmp_path):
    sd = random_state_dict(mm_table(R18, 1, 17))
    model = build_model(ModelConfig())
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(model, tmp_path / "nope.pth")
    broken = dict(sd)
    del broken["head.predict_layers.3.conv_layers.1.conv.weight"]
    broken["head.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": broken}, tmp_path / "b.pth")
    with pytest.raises(
        CheckpointError, match=r"missing keys: head\.predict_layers\.3\.conv_layers\.1\.conv\.weight"
    ):
        load_checkpoint(model, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: head\.extra\.weight"):
        load_checkpoint(model, tmp_path / "b.pth")
    # K = 16 checkpoint into a K = 17 model: a shape mismatch is always an error.
    torch.save({"state_dict": random_state_dict(mm_table(R18, 1, 16))}, tmp_path / "k16.pth")
    with pytest.raises(
        CheckpointError, match=r"shape mismatches: .*\(16, 256, 3, 3\) vs model \(17, 256, 3, 3\)"
    ):
        load_checkpoint(model, tmp_path / "k16.pth")


@pytest.mark.parametrize("stages", [1, 2])
def test_official_checkpoint_gives_the_official_output(tmp_path, stages):
    """A random official-format state dict (with conv biases), run through an independent functional forward of
    the official network, equals our model after loading the file (module. prefix, {'model': sd})."""
    blocks, k = [1, 1, 1, 1], 5
    off = random_state_dict(
        off_table(blocks, stages, k), conv_bias=True, gen=torch.Generator().manual_seed(3)
    )
    path = tmp_path / "off.pth"
    torch.save({"model": {f"module.{key}": v for key, v in off.items()}}, path)
    model = build_model(ModelConfig(num_blocks=blocks, num_stages=stages, num_keypoints=k)).eval()
    load_checkpoint(model, path)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = off_forward(off, x, blocks, stages)
        got = model(x)
    assert got.shape == (2, k, 16, 24)
    scale = expected.abs().max()
    assert scale > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5 * scale, rtol=1e-4)

    # The CLI writes a file in our layout that loads strictly and gives the same output.
    out = tmp_path / "converted.pth"
    assert convert_checkpoint.main(["--from", "official", str(path), str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert not any(key.endswith("conv.bias") for key in saved["state_dict"])
    twin = build_model(ModelConfig(num_blocks=blocks, num_stages=stages, num_keypoints=k)).eval()
    load_checkpoint(twin, out)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), expected, atol=1e-5 * scale, rtol=1e-4)


def test_official_bias_folding_and_bgr_flip():
    off = random_state_dict(off_table([1, 1, 1, 1], 1, 3), conv_bias=True)
    conv = convert_official_state_dict(off, bgr_to_rgb=True)
    key = "stage0.downsample.layer2.0.downsample"
    mm = "backbone.multi_stage_rsn.0.downsample.layer2.0.downsample"
    torch.testing.assert_close(
        conv[f"{mm}.bn.running_mean"], off[f"{key}.bn.running_mean"] - off[f"{key}.conv.bias"]
    )
    torch.testing.assert_close(
        conv["backbone.top.top.0.conv.weight"], off["top.conv.conv.weight"][:, [2, 1, 0]]
    )
    assert "head.predict_layers.3.conv_layers.1.conv.weight" in conv
    with pytest.raises(CheckpointError, match="no counterpart"):
        convert_official_state_dict({"mystery.weight": torch.zeros(1)})


def test_file_with_python_objects_loads_with_a_warning(tmp_path):
    """MMPose 1.x files pickle mmengine objects in 'meta'; weights_only loading refuses them."""
    import argparse

    sd = random_state_dict(mm_table([1, 1, 1, 1], 1, 3))
    torch.save({"state_dict": sd, "meta": {"args": argparse.Namespace(lr=0.1)}}, tmp_path / "m.pth")
    model = build_model(ModelConfig(num_blocks=[1, 1, 1, 1], num_keypoints=3))
    with pytest.warns(UserWarning, match="weights_only=False"):
        load_checkpoint(model, tmp_path / "m.pth")
    assert torch.equal(
        model.state_dict()["backbone.top.top.0.conv.weight"], sd["backbone.top.top.0.conv.weight"]
    )
