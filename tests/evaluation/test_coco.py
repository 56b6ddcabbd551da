"""COCO results and evaluation: our wrapper equals a direct pycocotools run on the same files."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rsn_fast.evaluation.coco import (
    STAT_NAMES,
    coco_keypoint_eval,
    keypoints_to_coco_results,
    merge_results,
    person_scores,
)


def make_gt(rng, k=17, n_images=5):
    images, anns, poses = [], [], []
    aid = 1
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id * 7, "file_name": f"{img_id:012d}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.uniform(0, 400), rng.uniform(0, 250)
            w, h = rng.uniform(30, 220), rng.uniform(60, 220)
            xy = np.stack([rng.uniform(x0, x0 + w, k), rng.uniform(y0, y0 + h, k)], axis=1)
            v = rng.choice([0, 1, 2], size=k, p=[0.2, 0.2, 0.6])
            xy[v == 0] = 0
            kp = np.concatenate([xy, v[:, None]], axis=1).reshape(-1)
            anns.append(
                {
                    "id": aid,
                    "image_id": img_id * 7,
                    "category_id": 1,
                    "keypoints": [float(a) for a in kp],
                    "num_keypoints": int((v > 0).sum()),
                    "bbox": [x0, y0, w, h],
                    "area": w * h * 0.6,
                    "iscrowd": 0,
                }
            )
            poses.append((img_id * 7, xy, np.sqrt(w * h)))
            aid += 1
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(k)], "skeleton": []}]
    return {"images": images, "annotations": anns, "categories": cats}, poses


def make_results(rng, poses, k):
    ids, coords, kscores, bscores = [], [], [], []
    for img_id, xy, size in poses:
        ids.append(img_id)
        coords.append(xy + rng.normal(0, 0.04 * size, size=xy.shape))
        kscores.append(rng.uniform(0.3, 1.0, size=k))
        bscores.append(rng.uniform(0.5, 1.0))
        if rng.uniform() < 0.4:  # a false positive
            ids.append(img_id)
            coords.append(rng.uniform(0, 400, size=(k, 2)))
            kscores.append(rng.uniform(0.0, 0.6, size=k))
            bscores.append(rng.uniform(0.1, 0.9))
    return np.array(ids), np.stack(coords), np.stack(kscores), np.array(bscores)


def direct(ann_file, res_file, sigmas=None):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        dt = gt.loadRes(res_file)
        ev = COCOeval(gt, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("k", [17, 5])
def test_wrapper_equals_direct_pycocotools(tmp_path, k, capsys):
    rng = np.random.default_rng(k)
    gt, poses = make_gt(rng, k)
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    results = keypoints_to_coco_results(*make_results(rng, poses, k), score_mode="rsn")
    res = tmp_path / "res.json"
    res.write_text(json.dumps(results))
    sigmas = None if k == 17 else rng.uniform(0.03, 0.1, size=k)
    ours = coco_keypoint_eval(str(ann), str(res), sigmas=sigmas, print_summary=True)
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in printed
    assert printed.count("Average Recall") == 5 and printed.count("Average Precision") == 5
    want = direct(str(ann), str(res), sigmas)
    assert list(ours) == list(STAT_NAMES)
    np.testing.assert_array_equal([ours[n] for n in STAT_NAMES], want)
    assert 0.05 < ours["AP"] < 0.999  # a real, non-degenerate evaluation
    # the list form gives the same numbers and does not touch the caller's dicts
    before = json.dumps(results)
    again = coco_keypoint_eval(str(ann), results, sigmas=sigmas, print_summary=False)
    assert again == ours and json.dumps(results) == before
    assert capsys.readouterr().out == ""
    if k == 5:  # the sigmas really reach COCOeval
        other = coco_keypoint_eval(str(ann), results, sigmas=sigmas * 3, print_summary=False)
        assert other["AP"] != ours["AP"]


def test_perfect_results_give_ap_one(tmp_path):
    rng = np.random.default_rng(3)
    gt, poses = make_gt(rng)
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    ids = np.array([p[0] for p in poses])
    coords = np.stack([p[1] for p in poses])
    res = keypoints_to_coco_results(ids, coords, np.ones((len(ids), 17)), np.ones(len(ids)))
    assert coco_keypoint_eval(str(ann), res, print_summary=False)["AP"] == pytest.approx(1.0)


def test_person_score_rules():
    ks = np.array([[0.9, 0.1, 0.5, 0.2], [0.1, 0.15, 0.2, 0.05]])
    box = np.array([0.8, 0.5])
    np.testing.assert_allclose(person_scores(ks, box, "rsn"), [0.8 * 1.7 / 4, 0.5 * 0.5 / 4])
    # mmpose: strictly above 0.2 only; none above → 0
    np.testing.assert_allclose(person_scores(ks, box, "mmpose", 0.2), [0.8 * 1.4 / 2, 0.0])
    with pytest.raises(ValueError):
        person_scores(ks, box, "max")


def test_results_format_and_merge():
    coords = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)
    ks = np.full((2, 3), 0.5)
    r = keypoints_to_coco_results([4, 9], coords, ks, [1.0, 0.5], indices=[0, 1], areas=[10.0, 20.0])
    assert r[0]["keypoints"] == [0.0, 1.0, 0.5, 2.0, 3.0, 0.5, 4.0, 5.0, 0.5]
    assert r[1]["score"] == pytest.approx(0.25) and r[1]["index"] == 1 and r[1]["area"] == 20.0
    assert isinstance(r[0]["image_id"], int) and r[0]["category_id"] == 1
    # a padded DistributedSampler repeats item 0 on the second rank
    merged = merge_results([r, [dict(r[0])]])
    assert len(merged) == 2
    assert [m["image_id"] for m in merged] == [9, 4]  # (image_id, score) descending


def test_empty_results_warn(tmp_path):
    gt, _ = make_gt(np.random.default_rng(0))
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    with pytest.warns(UserWarning):
        out = coco_keypoint_eval(str(ann), [], print_summary=False)
    assert out == {n: 0.0 for n in STAT_NAMES}
