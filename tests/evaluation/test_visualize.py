"""visualize: writes images of the input's size with the skeleton drawn where the confident joints are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np

from rsn_fast.tools.visualize import SIDE_COLORS, side_of, visualize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pose(rng, w, h, score):
    xy = np.stack([rng.uniform(10, w - 10, 17), rng.uniform(10, h - 10, 17)], axis=1)
    return np.concatenate([xy, np.full((17, 1), score)], axis=1)


def test_cli_writes_images_of_input_size(tmp_path):
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    sizes = {139: (97, 131, ".jpg"), 7: (64, 200, ".png")}  # id: (h, w, ext)
    for img_id, (h, w, ext) in sizes.items():
        cv2.imwrite(str(img_dir / f"{img_id:012d}{ext}"), np.full((h, w, 3), 40, np.uint8))
    results = []
    for img_id, (h, w, _) in sizes.items():
        results.append(
            {
                "image_id": img_id,
                "category_id": 1,
                "score": 0.9,
                "keypoints": _pose(rng, w, h, 0.8).reshape(-1).tolist(),
            }
        )
    (tmp_path / "res.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable,
        "-m",
        "rsn_fast.tools.visualize",
        "--results",
        str(tmp_path / "res.json"),
        "--images",
        str(img_dir),
        "--out",
        str(out),
        "--score-thr",
        "0.3",
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, timeout=120)
    for img_id, (h, w, ext) in sizes.items():
        img = cv2.imread(str(out / f"{img_id:012d}{ext}"))
        assert img is not None and img.shape == (h, w, 3)
        assert (np.abs(img.astype(int) - 40).sum(axis=2) > 60).sum() > 50  # something was drawn


def test_threshold_and_side_colours(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "5.png"), np.zeros((100, 100, 3), np.uint8))
    kps = np.zeros((17, 3))
    kps[:, :2] = 50
    kps[5] = [20, 20, 0.9]  # left_shoulder, confident
    kps[6] = [80, 80, 0.1]  # right_shoulder, below threshold
    res = [{"image_id": 5, "category_id": 1, "score": 1.0, "keypoints": kps.reshape(-1).tolist()}]
    (path,) = visualize(res, str(img_dir), str(tmp_path / "o"), score_thr=0.3, ext="png")
    img = cv2.imread(path)
    assert tuple(int(v) for v in img[20, 20]) == SIDE_COLORS["left"]
    assert img[80, 80].sum() == 0  # the low-score joint is not drawn
    assert img[50, 50].sum() == 0  # joints with score 0 are not drawn
    assert side_of("left_eye") == "left" and side_of("r_wrist") == "right" and side_of("nose") == "centre"
