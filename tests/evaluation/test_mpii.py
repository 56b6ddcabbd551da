"""MPII PCKh on hand-computed cases (MMPose MpiiPCKAccuracy convention)."""

from __future__ import annotations

import numpy as np
import pytest

from rsn_fast.evaluation.mpii import head_sizes_from_boxes, pckh


def test_head_size_is_diagonal_times_06():
    boxes = np.array([[[10.0, 20.0], [40.0, 60.0]]])  # 30 x 40 → diagonal 50
    np.testing.assert_allclose(head_sizes_from_boxes(boxes), [30.0])


def test_pckh_hand_computed_two_people():
    k = 16
    gt = np.zeros((2, k, 2))
    pred = gt.copy()
    head = np.array([10.0, 20.0])
    # person 0 (head 10): joint 0 off by 4 (0.4 < 0.5, > 0.1), joint 9 off by exactly 5 (0.5, not < 0.5)
    pred[0, 0] = [4.0, 0.0]
    pred[0, 9] = [3.0, 4.0]
    # person 1 (head 20): joint 0 off by 12 (0.6), joint 9 off by 1 (0.05)
    pred[1, 0] = [0.0, 12.0]
    pred[1, 9] = [0.6, 0.8]
    # pelvis (6) badly off but excluded from the mean
    pred[:, 6] = [100.0, 0.0]
    vis = np.ones((2, k))
    vis[1, 15] = 0  # person 1's left wrist unlabelled
    out = pckh(pred, gt, vis, head, thr=0.5)
    pj = out["per_joint"]
    assert pj[0] == 50.0 and pj[9] == 50.0 and pj[6] == 0.0 and pj[15] == 100.0 and pj[3] == 100.0
    pj01 = out["per_joint@0.1"]
    assert pj01[0] == 0.0 and pj01[9] == 50.0
    # mean over the 14 counted joints weighted by visible counts: 27 joints, 2 misses (joints 0 and 9)
    assert out["PCKh"] == pytest.approx(100.0 * 25 / 27)
    # @0.1: misses are joint 0 twice and joint 9 once
    assert out["PCKh@0.1"] == pytest.approx(100.0 * 24 / 27)
    assert out["Head"] == 50.0 and out["Ankle"] == pytest.approx((50.0 + 100.0) / 2)
    assert out["Wrist"] == 100.0


def test_pckh_zero_head_size_and_offset():
    gt = np.ones((2, 3, 2)) * 5
    pred = gt - 1.0  # off by (1, 1) unless the offset fixes it
    vis = np.ones((2, 3))
    out = pckh(pred, gt, vis, np.array([1.0, 0.0]), thr=0.5, pred_offset=1.0)
    # person 1 has head size 0: not evaluated, but (as in MMPose) its joints still weigh the mean
    assert out["per_joint"] == [100.0, 100.0, 100.0]
    off = pckh(pred, gt, vis, np.array([1.0, 0.0]), thr=0.5)
    assert off["per_joint"] == [0.0, 0.0, 0.0] and "Head" not in off


def test_pckh_never_visible_joint_is_nan():
    out = pckh(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)), np.array([[1, 0, 1]]), np.array([5.0]))
    assert np.isnan(out["per_joint"][1]) and out["PCKh"] == pytest.approx(100.0)
