"""Target kernels (C++ on CPU, CUDA on GPU) vs the batched references and the per-keypoint procedures (issue 7).

megvii_targets: equal to the cv2 procedure within 1e-3 on the 0..255 scale (and to the reference). gaussian_targets
(MMPose MSRAHeatmap, σ given): its reference against MMPose's NumPy procedure, the kernels against the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsn_fast import _ext
from rsn_fast.ops import megvii_targets
from rsn_fast.ops._launch import recording
from rsn_fast.ops.gaussian_targets import (
    gaussian_targets,
    gaussian_targets_numpy_loop,
    gaussian_targets_reference,
)
from rsn_fast.ops.megvii_targets import megvii_targets_cv2_loop, megvii_targets_reference
from tests.backends import CUDA_DEVICE, EMULATION, needs_cuda_backend
from tests.conftest import TRITON_INTERPRET, case_seed
from tests.launches import assert_multi_tile

HAS_OPS = _ext.extension_available() and hasattr(torch.ops.rsn_fast, "megvii_targets")
requires_ops = pytest.mark.skipif(not HAS_OPS, reason="rsn_fast._C is not built with the target ops")
TARGET_ATOL = 1e-3  # 0..255 scale (issues 3 and 7)
GAUSS_ATOL = 1e-6  # peak-1 scale: float32 exp of the same argument, 1-ulp differences at most


def _keypoints(rng, n, k, w, h):
    """On and off the grid, on every border row/column, outside on each side, NaN, zero weights."""
    kp = np.stack([rng.uniform(-3, w + 2, (n, k)), rng.uniform(-3, h + 2, (n, k))], -1).astype(np.float32)
    kp[0, :8] = [
        [0.0, 0.0],
        [w - 1, h - 1],
        [0.2, h - 0.1],
        [w - 0.5, 0.7],
        [3.0, 4.0],
        [w, 2],
        [2, h],
        [-0.5, 1],
    ]
    kp[0, 8] = [np.nan, 2.0]
    weights = rng.integers(0, 3, (n, k)).astype(np.float32)
    weights[0, :9] = 2
    return kp, weights


@requires_ops
@pytest.mark.parametrize("normalize", ["global_max", "center"])
@pytest.mark.parametrize(
    "size,kernels",
    [((48, 64), [15, 11, 9, 7, 5]), ((72, 96), [11, 9, 7, 5]), ((7, 5), [11, 5, 3]), ((24, 32), [21, 1])],
)
def test_megvii_cpp_equals_cv2_and_reference(size, kernels, normalize):
    rng = np.random.default_rng(case_seed())
    w, h = size
    kp, wt = _keypoints(rng, 3, 17, w, h)
    got = megvii_targets(torch.from_numpy(kp), torch.from_numpy(wt), size, kernels, normalize, backend="cpp")
    want = megvii_targets_cv2_loop(kp, wt, size, kernels, normalize)
    ref = megvii_targets_reference(torch.from_numpy(kp), torch.from_numpy(wt), size, kernels, normalize)
    assert got.shape == (3, len(kernels), 17, h, w) and got.dtype == torch.float32
    assert np.abs(want).max() > 0 and (want == 0).all(axis=(-1, -2)).any()  # both kinds of map present
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=TARGET_ATOL)
    torch.testing.assert_close(got, ref, rtol=0, atol=TARGET_ATOL)


@requires_ops
def test_megvii_cpp_is_default_and_opcheck():
    kp = torch.tensor([[[10.3, 7.9], [0.5, 0.5], [-1.0, 3.0]]])
    wt = torch.tensor([[2.0, 1.0, 2.0]])
    a = megvii_targets(kp, wt, (48, 64), [11, 9, 7, 5])
    b = megvii_targets(kp, wt, (48, 64), [11, 9, 7, 5], backend="cpp")
    assert torch.equal(a, b)
    torch.library.opcheck(torch.ops.rsn_fast.megvii_targets.default, (kp, wt, 48, 64, [11, 9, 7, 5], False))
    with pytest.raises(ValueError, match="kernels"):
        torch.ops.rsn_fast.megvii_targets(kp, wt, 48, 64, [4], False)
    with pytest.raises(ValueError, match="weights"):
        torch.ops.rsn_fast.megvii_targets(kp, wt[:, :2], 48, 64, [5], False)


@pytest.mark.parametrize("sigma", [2.0, 3.0, 1.5, 1.1])
@pytest.mark.parametrize("size", [(48, 64), (7, 5)])
def test_gaussian_reference_equals_mmpose_numpy(size, sigma):
    rng = np.random.default_rng(case_seed())
    w, h = size
    kp, wt = _keypoints(rng, 3, 17, w, h)
    kp[1, :3] = [[-3.4, 2.0], [-2.6, -0.7], [w + 5.0, 1.0]]  # patches cut by the map edge or off it
    wt[1, :3] = 1
    got = gaussian_targets_reference(torch.from_numpy(kp), torch.from_numpy(wt), size, sigma)
    want = gaussian_targets_numpy_loop(kp, wt, size, sigma)
    assert want.max() == 1.0 and (want == 0).all(axis=(-1, -2)).any()
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=GAUSS_ATOL)


@requires_ops
@pytest.mark.parametrize("sigma", [2.0, 3.0, 1.5, 0.7])
def test_gaussian_cpp_equals_reference(sigma):
    rng = np.random.default_rng(case_seed())
    kp, wt = _keypoints(rng, 4, 17, 48, 64)
    kp, wt = torch.from_numpy(kp), torch.from_numpy(wt)
    got = gaussian_targets(kp, wt, (48, 64), sigma, backend="cpp")
    torch.testing.assert_close(
        got, gaussian_targets_reference(kp, wt, (48, 64), sigma), rtol=0, atol=GAUSS_ATOL
    )
    torch.library.opcheck(torch.ops.rsn_fast.gaussian_targets.default, (kp, wt, 48, 64, sigma))


@needs_cuda_backend
@requires_ops
def test_cuda_targets_match_cpu():
    rng = np.random.default_rng(case_seed())
    kp, wt = _keypoints(rng, 3, 17, 48, 64) if EMULATION else _keypoints(rng, 48, 17, 48, 64)
    kp, wt, dev = torch.from_numpy(kp), torch.from_numpy(wt), CUDA_DEVICE
    for norm in ("global_max", "center"):
        got = megvii_targets(kp.to(dev), wt.to(dev), (48, 64), [15, 11, 9, 7, 5], norm, backend="cuda").cpu()
        want = megvii_targets(kp, wt, (48, 64), [15, 11, 9, 7, 5], norm, backend="cpp")
        torch.testing.assert_close(got, want, rtol=0, atol=TARGET_ATOL)
    got = gaussian_targets(kp.to(dev), wt.to(dev), (48, 64), 2.0, backend="cuda").cpu()
    torch.testing.assert_close(
        got, gaussian_targets(kp, wt, (48, 64), 2.0, backend="cpp"), rtol=0, atol=GAUSS_ATOL
    )


@pytest.mark.skipif(
    not TRITON_INTERPRET and not torch.cuda.is_available(), reason="Triton needs a GPU or TRITON_INTERPRET=1"
)
@pytest.mark.parametrize("normalize", ["global_max", "center"])
def test_megvii_triton_equals_reference(normalize):
    rng = np.random.default_rng(case_seed())
    dev = "cpu" if TRITON_INTERPRET else "cuda"
    if dev == "cuda" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("Triton needs compute capability >= 8.0")
    for size, kernels in [((48, 64), [11, 9, 7, 5]), ((7, 5), [11, 5, 3])]:
        kp, wt = _keypoints(rng, 2, 17, *size)
        kp, wt = torch.from_numpy(kp).to(dev), torch.from_numpy(wt).to(dev)
        with recording() as launches:
            got = megvii_targets(kp, wt, size, kernels, normalize, backend="triton").cpu()
        assert_multi_tile(launches, ["_megvii_kernel"])  # one program per map: at least two of them
        want = megvii_targets_reference(kp.cpu(), wt.cpu(), size, kernels, normalize)
        torch.testing.assert_close(got, want, rtol=0, atol=TARGET_ATOL)
