"""megvii_targets: the batched op against the per-keypoint cv2 procedure, and its defining properties."""

import cv2
import numpy as np
import pytest
import torch

from rsn_fast.ops import megvii_targets
from rsn_fast.ops.megvii_targets import gaussian_profile, megvii_targets_cv2_loop
from rsn_fast.ops.megvii_targets.reference import reflect101
from tests.conftest import case_seed

TARGET_ATOL = 1e-3  # absolute, on the 0..255 scale (issue 3)


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 11, 13, 15, 17, 21])
def test_profile_equals_cv2(k):
    np.testing.assert_allclose(gaussian_profile(k), cv2.getGaussianKernel(k, 0).ravel(), rtol=0, atol=1e-12)


def test_reflect101_equals_cv2():
    for n in (1, 2, 3, 7):
        for i in range(-12, 12 + n):
            assert reflect101(i, n) == cv2.borderInterpolate(i, n, cv2.BORDER_REFLECT_101), (i, n)


@pytest.mark.parametrize("normalize", ["global_max", "center"])
@pytest.mark.parametrize(
    "size,kernels", [((48, 64), [15, 11, 9, 7, 5]), ((7, 5), [11, 5, 3]), ((24, 32), [9])]
)
def test_equals_cv2_procedure(size, kernels, normalize):
    rng = np.random.default_rng(case_seed())
    n, k = 3, 13
    w, h = size
    kp = np.stack([rng.uniform(-2, w + 1, (n, k)), rng.uniform(-2, h + 1, (n, k))], -1).astype(np.float32)
    # Force keypoints onto every border row/column, where reflect-101 folds the blur back.
    kp[0, :4] = [[0.2, 0.7], [w - 0.5, h - 0.1], [1.3, h - 1.6], [w - 1.9, 1.2]]
    weights = rng.integers(0, 3, (n, k)).astype(np.float32)
    weights[0, :4] = 2
    want = megvii_targets_cv2_loop(kp, weights, size, kernels, normalize)
    assert np.abs(want).max() > 0
    # the pure-torch reference explicitly, and whatever the automatic dispatch picks (the C++ kernel if built)
    for backend in ("reference", None):
        got = megvii_targets(
            torch.from_numpy(kp), torch.from_numpy(weights), size, kernels, normalize, backend=backend
        )
        assert got.shape == (n, len(kernels), k, h, w) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=TARGET_ATOL, err_msg=f"backend={backend}")


def test_peak_position_value_and_sigma():
    w, h = 48, 64
    kp = torch.tensor([[[20.7, 30.2], [10.0, 40.9]]])
    out = megvii_targets(kp, torch.ones(1, 2), (w, h), [11, 9, 7, 5])
    for li, ks in enumerate([11, 9, 7, 5]):
        for j in range(2):
            m = out[0, li, j]
            y, x = divmod(int(m.argmax()), w)
            assert (x, y) == (int(kp[0, j, 0]), int(kp[0, j, 1]))
            assert abs(float(m.max()) - 255.0) < 1e-3
            # The row through the peak is the kernel's profile scaled to 255 (σ from cv2's rule per kernel).
            row = m[y, x - ks // 2 : x + ks // 2 + 1].double()
            prof = torch.from_numpy(gaussian_profile(ks))
            torch.testing.assert_close(row, prof / prof.max() * 255.0, atol=1e-3, rtol=0)
            assert float(m[y, x + ks // 2 + 1]) == 0.0


def test_zero_maps():
    w, h = 12, 10
    kp = torch.tensor([[[-0.01, 3.0], [3.0, -0.5], [12.0, 3.0], [3.0, 10.2], [5.0, 5.0], [11.99, 9.99]]])
    wt = torch.tensor([[2.0, 2.0, 2.0, 2.0, 0.0, 1.0]])
    out = megvii_targets(kp, wt, (w, h), [5, 3])
    assert out[0, :, :5].abs().max() == 0
    assert out[0, :, 5].amax() > 254.9


def test_center_normalisation_exceeds_at_border():
    # One pixel in from a border, reflect-101 puts the max on the border pixel (RSN_SPEC 10.1).
    out = megvii_targets(torch.tensor([[[1.0, 20.0]]]), torch.ones(1, 1), (48, 64), [11], "center")
    assert abs(float(out[0, 0, 0, 20, 1]) - 255.0) < 1e-3
    assert float(out.max()) > 255.0 * 1.05


def test_dispatch_backend_and_device():
    kp = torch.rand(2, 3, 2) * 10
    out = megvii_targets(kp, torch.ones(2, 3), (16, 16), [5], backend="reference")
    assert out.device == kp.device and out.shape == (2, 1, 3, 16, 16)
