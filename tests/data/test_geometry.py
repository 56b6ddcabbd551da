"""Geometry: one affine per sample moves pixels and keypoints together; flips are involutions."""

import cv2
import numpy as np
import pytest

from rsn_fast.config import load_config
from rsn_fast.data import transforms as T
from rsn_fast.data.keypoints import COCO, MPII, get_keypoint_set
from tests.conftest import case_seed


@pytest.mark.parametrize("trial", range(12))
def test_dot_lands_on_transformed_keypoint(trial):
    rng = np.random.default_rng(case_seed())
    h_img, w_img = int(rng.integers(120, 300)), int(rng.integers(120, 300))
    input_size = (192, 256) if trial % 2 else (96, 128)
    x, y = rng.uniform(0.3, 0.7) * w_img, rng.uniform(0.3, 0.7) * h_img
    img = np.zeros((h_img, w_img), np.float32)
    cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 3 * 16, 1.0, -1, cv2.LINE_AA, shift=4)
    center = np.array([x, y]) + rng.uniform(-20, 20, 2)
    size = T.aspect_fit(rng.uniform(60, 200, 2), input_size[0] / input_size[1])
    p = T.AugParams(center, size, float(rng.uniform(-45, 45)), bool(trial % 3 == 0))
    m = T.affine_matrix(p, input_size, w_img)
    out = T.warp_image(img, m, input_size)
    kp = T.transform_keypoints(np.array([[x, y, 2.0]]), m, p.flip, np.array([0]))
    ys, xs = np.mgrid[: out.shape[0], : out.shape[1]]
    mass = out.sum()
    assert mass > 0
    got = np.array([(out * xs).sum() / mass, (out * ys).sum() / mass])
    assert np.abs(got - kp[0, :2]).max() < 1.0, (got, kp[0, :2])


def test_flip_in_matrix_equals_flipping_the_image_first():
    rng = np.random.default_rng(case_seed())
    img = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    p = T.AugParams(np.array([60.3, 48.2]), np.array([75.0, 100.0]), 17.0, True)
    m = T.affine_matrix(p, (48, 64), img.shape[1])
    q = T.AugParams(np.array([img.shape[1] - 1 - 60.3, 48.2]), p.size, 17.0, False)
    want = T.warp_image(cv2.flip(img, 1), T.affine_matrix(q, (48, 64), img.shape[1]), (48, 64))
    got = T.warp_image(img, m, (48, 64))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_flip_twice_is_identity():
    rng = np.random.default_rng(case_seed())
    w = 57
    img = rng.integers(0, 255, (31, w, 3), dtype=np.uint8)
    f = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(T.warp_image(T.warp_image(img, f, (w, 31)), f, (w, 31)), img)
    kp = np.concatenate([rng.uniform(0, 50, (17, 2)), rng.integers(0, 3, (17, 1))], 1)
    idx = COCO.flip_index()
    twice = T.transform_keypoints(T.transform_keypoints(kp, f, True, idx), f, True, idx)
    np.testing.assert_allclose(twice, kp, atol=1e-9)
    once = T.transform_keypoints(kp, f, True, idx)
    np.testing.assert_allclose(once[5, :2], [w - 1 - kp[6, 0], kp[6, 1]])


def test_flip_pairs_are_involutions():
    cfg = load_config(
        {
            "data": {
                "keypoints": "custom",
                "keypoint_set": {"names": list("abcdef"), "flip_pairs": [[0, 1], [4, 2]]},
            },
            "model": {"num_keypoints": 6},
        }
    )
    for ks in (COCO, MPII, get_keypoint_set(cfg)):
        idx = ks.flip_index()
        np.testing.assert_array_equal(idx[idx], np.arange(ks.num_keypoints))
        assert sorted(idx) == list(range(ks.num_keypoints))
        for i, j in ks.flip_pairs:
            assert idx[i] == j and idx[j] == i


def test_crop_visibility_rule():
    kp = np.array([[0, 0, 2], [95, 127, 1], [-0.01, 5, 2], [95.01, 5, 2], [5, 127.5, 2], [5, 5, 0]], float)
    np.testing.assert_array_equal(T.crop_visibility(kp, (96, 128)), [2, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("recipe", ["paper", "official", "mmpose"])
def test_samplers_within_ranges_and_deterministic(recipe):
    cfg = load_config({"data": {"recipe": recipe}}).data
    kp = np.concatenate([np.random.uniform(50, 150, (17, 2)), np.full((17, 1), 2.0)], 1)
    box = [40.0, 30.0, 100.0, 160.0]
    a = [T.sample_train_params(np.random.default_rng(5), cfg, box, kp, COCO, (192, 256)) for _ in range(2)]
    assert np.array_equal(a[0].center, a[1].center) and a[0].rotation == a[1].rotation
    rng = np.random.default_rng(case_seed())
    ps = [T.sample_train_params(rng, cfg, box, kp, COCO, (192, 256)) for _ in range(400)]
    rots = np.array([p.rotation for p in ps])
    limit = {"paper": 45, "official": 45, "mmpose": 80}[recipe]
    assert np.abs(rots).max() <= limit and (rots != 0).mean() > 0.3
    flips = np.mean([p.flip for p in ps])
    assert 0.4 < flips < 0.6
    for p in ps:
        assert abs(p.size[0] / p.size[1] - 0.75) < 1e-9
    if recipe == "paper":
        base = T.box_to_center_size(box, (1.09, 1.135), 0.75)[1]
        ratio = np.array([p.size[0] / base[0] for p in ps])
        assert ratio.min() >= 0.7 - 1e-9 and ratio.max() <= 1.35 + 1e-9
    else:
        assert any(p.half_body for p in ps)


def test_test_params_box_extension():
    for recipe, ext in (("off", (1.09, 1.135)), ("paper", (1.09, 1.135)), ("mmpose", (1.25, 1.25))):
        cfg = load_config({"data": {"recipe": recipe}}).data
        p = T.test_params(cfg, [10, 20, 30, 120], (192, 256))
        np.testing.assert_allclose(p.center, [25, 80])
        np.testing.assert_allclose(p.size, [120 * ext[1] * 0.75, 120 * ext[1]])
        assert p.rotation == 0 and not p.flip
