"""OKS-NMS: hand-computed OKS and greedy suppression."""

from __future__ import annotations

import numpy as np

from rsn_fast.evaluation.nms import COCO_SIGMAS, oks_iou, oks_nms, oks_nms_results


def test_oks_iou_hand_computed():
    sig = np.array([0.1, 0.2])
    g = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]])
    d = np.array([[[3.0, 4.0, 1.0], [10.0, 0.0, 0.1]]])
    # joint 0: dist² 25, var (0.2)² = 0.04, mean area (100 + 300)/2 = 200 → e = 25 / 0.04 / 200 / 2 = 1.5625
    want = (np.exp(-1.5625) + 1.0) / 2
    np.testing.assert_allclose(oks_iou(g, d, 100.0, np.array([300.0]), sig), [want], rtol=1e-12)
    # with vis_thr 0.5 joint 1 of d is not counted
    np.testing.assert_allclose(oks_iou(g, d, 100.0, np.array([300.0]), sig, vis_thr=0.5), [np.exp(-1.5625)])
    # nothing visible: 0
    np.testing.assert_allclose(oks_iou(g, d, 100.0, np.array([300.0]), sig, vis_thr=1.0), [0.0])


def test_oks_nms_suppresses_duplicates_only():
    rng = np.random.default_rng(0)
    base = np.concatenate([rng.uniform(100, 200, size=(17, 2)), np.ones((17, 1))], axis=1)
    far = base.copy()
    far[:, :2] += 300
    near = base.copy()
    near[:, :2] += 0.5
    kps = np.stack([near, base, far])
    scores = np.array([0.5, 0.9, 0.7])
    areas = np.full(3, 10000.0)
    np.testing.assert_array_equal(oks_nms(kps, scores, areas, thr=0.9), [1, 2])
    # OKS(base, near) is just below 1: a threshold above it keeps everything, in score order
    ovr = oks_iou(base, near[None], 10000.0, np.array([10000.0]), COCO_SIGMAS)[0]
    assert 0.9 < ovr < 1.0
    np.testing.assert_array_equal(oks_nms(kps, scores, areas, thr=ovr), [1, 2, 0])
    np.testing.assert_array_equal(oks_nms(kps, scores, areas, thr=ovr - 1e-9), [1, 2])
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0)).size == 0


def test_oks_nms_results_per_image():
    pose = [float(v) for v in np.tile([50.0, 60.0, 1.0], 17)]
    pose[0] = 40.0  # give the keypoints an extent
    res = [
        {"image_id": 1, "category_id": 1, "keypoints": pose, "score": 0.9, "area": 900.0},
        {"image_id": 1, "category_id": 1, "keypoints": list(pose), "score": 0.8, "area": 900.0},
        {"image_id": 2, "category_id": 1, "keypoints": list(pose), "score": 0.1},
    ]
    kept = oks_nms_results(res, thr=0.9)
    assert [(r["image_id"], r["score"]) for r in kept] == [(1, 0.9), (2, 0.1)]
