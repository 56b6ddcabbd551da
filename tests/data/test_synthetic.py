"""The synthetic data set: valid COCO files, true flags, deterministic per seed."""

import contextlib
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rsn_fast.data.keypoints import COCO as COCO_SET
from rsn_fast.data.synthetic import generate


def _quiet(fn, *a):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a)


def test_pycocotools_loads_and_self_eval_is_perfect(synthetic_dir):
    for split in ("train", "val"):
        gt = _quiet(COCO, str(synthetic_dir / "annotations" / f"person_keypoints_{split}.json"))
        cat = gt.loadCats(1)[0]
        assert cat["keypoints"] == list(COCO_SET.names) and len(cat["skeleton"]) == 19
        anns = gt.dataset["annotations"]
        assert len(anns) >= len(gt.dataset["images"])
        res = [
            {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in anns
        ]
        dt = _quiet(gt.loadRes, res)
        ev = COCOeval(gt, dt, "keypoints")
        _quiet(ev.evaluate)
        _quiet(ev.accumulate)
        _quiet(ev.summarize)
        assert abs(ev.stats[0] - 1.0) < 1e-9
        flags = np.array([a["keypoints"][2::3] for a in anns])
        assert set(np.unique(flags)) <= {0, 1, 2} and (flags == 1).any() and (flags == 0).any()
        for a in anns:
            kp = np.array(a["keypoints"]).reshape(-1, 3)
            assert a["num_keypoints"] == (kp[:, 2] > 0).sum() > 0
            assert np.all(kp[kp[:, 2] == 0] == 0)  # a keypoint outside the image is written as 0,0,0
            im = gt.imgs[a["image_id"]]
            lab = kp[kp[:, 2] > 0]
            assert (lab[:, 0] >= 0).all() and (lab[:, 0] <= im["width"] - 1).all()
    gt = _quiet(COCO, str(synthetic_dir / "annotations" / "person_keypoints_val.json"))
    dets = json.load(open(synthetic_dir / "detections_val.json"))
    assert dets and all(d["category_id"] == 1 and 0 <= d["score"] <= 1 for d in dets)
    _quiet(gt.loadRes, str(synthetic_dir / "detections_val.json"))
    assert len(dets) != len(gt.dataset["annotations"])  # misses and false positives


def test_same_seed_same_bytes(tmp_path, synthetic_dir):
    generate(str(tmp_path / "a"), 16, 8, seed=3)
    for name in ("annotations/person_keypoints_train.json", "annotations/person_keypoints_val.json"):
        assert (tmp_path / "a" / name).read_bytes() == (synthetic_dir / name).read_bytes()
    assert (tmp_path / "a" / "detections_val.json").read_bytes() == (
        synthetic_dir / "detections_val.json"
    ).read_bytes()
    assert (tmp_path / "a/images/train_000004.jpg").read_bytes() == (
        synthetic_dir / "images/train_000004.jpg"
    ).read_bytes()
    generate(str(tmp_path / "b"), 4, 2, seed=4)
    a = json.load(open(tmp_path / "a/annotations/person_keypoints_train.json"))["annotations"][0]["keypoints"]
    b = json.load(open(tmp_path / "b/annotations/person_keypoints_train.json"))["annotations"][0]["keypoints"]
    assert a != b
