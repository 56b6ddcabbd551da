"""MPII in MMPose's JSON format: the record conventions (centre shift, 1-based → 0-based, ×1.25 box, head size)."""

import json

import numpy as np
import pytest

from rsn_fast.data.annotations import AnnotationError, mpii_records


def _entry(rng):
    joints = rng.uniform(50, 300, (16, 2)).round(1)
    vis = (rng.uniform(size=16) > 0.3).astype(int)
    return {
        "image": "015601864.jpg",
        "center": [200.0, 180.0],
        "scale": 1.5,
        "joints": joints.tolist(),
        "joints_vis": vis.tolist(),
        "headbox": [120.0, 60.0, 150.0, 100.0],
    }


def test_mpii_records_follow_mmpose_conventions(tmp_path):
    rng = np.random.default_rng(3)
    e = _entry(rng)
    path = tmp_path / "mpii_val.json"
    path.write_text(json.dumps([e]))
    (rec,) = mpii_records(str(path), "imgs")
    # MMPose: centre y += 15·scale, then both 1-based → 0-based; box side = scale·1.25·200 around the centre
    cx, cy = 200.0 - 1, 180.0 + 15 * 1.5 - 1
    side = 1.5 * 1.25 * 200
    np.testing.assert_allclose(rec["box"], [cx - side / 2, cy - side / 2, side, side])
    np.testing.assert_allclose(rec["keypoints"][:, :2], np.asarray(e["joints"]) - 1)
    np.testing.assert_array_equal(rec["keypoints"][:, 2], np.where(np.asarray(e["joints_vis"]) > 0, 2, 0))
    assert rec["head_size"] == pytest.approx(0.6 * np.hypot(30.0, 40.0))  # 0.6 × head-box diagonal
    assert rec["image_file"].endswith("imgs/015601864.jpg") and rec["score"] == 1.0


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda e: e.pop("joints_vis"), r"\[0\]\.joints_vis"),
        (lambda e: e.update(joints=e["joints"][:15]), r"expected 16 joints"),
        (lambda e: e.update(scale=0), r"\[0\]\.scale"),
    ],
)
def test_bad_mpii_json_names_the_file_and_field(tmp_path, mutate, match):
    e = _entry(np.random.default_rng(0))
    mutate(e)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([e]))
    with pytest.raises(AnnotationError, match=match) as info:
        mpii_records(str(path), "imgs")
    assert "bad.json" in str(info.value)
