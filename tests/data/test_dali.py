"""The DALI pipeline (CPU mode) against the torch pipeline: crops, keypoints, flip swap, targets, order, shards."""

from __future__ import annotations

import functools
import sys

import cv2
import numpy as np
import pytest
import torch

from rsn_fast.config import load_config
from rsn_fast.data import build_dataset, collate_batch
from rsn_fast.data import transforms as T
from rsn_fast.data.dali import (
    DaliLoader,
    DaliNotInstalledError,
    dali_available,
    dali_matrix,
    image_size,
)
from rsn_fast.data.loaders import build_dali_loader
from rsn_fast.engine.sampling import ResumableSampler, SeededDataset, sample_seed
from tests.conftest import case_seed
from tests.data.conftest import synthetic_cfg

needs_dali = pytest.mark.skipif(
    not dali_available(), reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)"
)
pytestmark = pytest.mark.dali


def _cfg(root, **data):
    return load_config(synthetic_cfg(root, **data))


def _loader(ds, sampler, bs, drop_last=True, **kw):
    kw.setdefault("threads", 2)
    return DaliLoader(ds, sampler, bs, drop_last, device="cpu", **kw)


def _grey(image: torch.Tensor, ds) -> np.ndarray:
    """Normalised (N, 3, H, W) → 0..255 (N, H, W, 3) float64."""
    mean, std = ds.data_cfg.resolved_mean_std()
    x = image.float().permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    return x * np.asarray(std) + np.asarray(mean)


def _source_coords(matrix: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W, 2) source-image position of each output pixel centre (cv2 convention)."""
    inv = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([xs, ys], -1) @ inv[:, :2].T + inv[:, 2]


@needs_dali
def test_dali_matches_torch_pipeline_crops_keypoints_flip_targets(synthetic_dir):
    """Same (epoch, index) keys and seeds (the engine's sampler) → same parameters, crops, keypoints, targets."""
    cfg = _cfg(synthetic_dir, recipe="official")
    ds = build_dataset(cfg, "train", item_targets=False)
    seed = 11
    n = (len(ds) // 4) * 4
    sampler = ResumableSampler(len(ds), 4, seed=seed)
    loader = _loader(ds, sampler, 4, seed_fn=functools.partial(sample_seed, seed))
    torch_loader = torch.utils.data.DataLoader(
        SeededDataset(build_dataset(cfg, "train", item_targets=False), seed),
        batch_size=4,
        sampler=sampler,
        collate_fn=functools.partial(collate_batch, dataset=ds),
        drop_last=True,
    )
    sampler.set_epoch(1)
    flips = rotations = 0
    batches = 0
    w_in, h_in = ds.input_size
    mean, std = ds.data_cfg.resolved_mean_std()
    for bd, bt in zip(loader, torch_loader, strict=True):
        batches += 1
        for k in ("image_id", "index", "flipped", "center", "box_size", "rotation", "score"):
            assert torch.equal(bd["meta"][k], bt["meta"][k]), k
        flips += int(bd["meta"]["flipped"].sum())
        rotations += int((bd["meta"]["rotation"] != 0).sum())
        # Keypoints (flip pairs swapped) and weights come through the same matrix.
        assert (bd["keypoints"] - bt["keypoints"]).abs().max() < 0.5
        assert torch.equal(bd["target_weight"], bt["target_weight"])
        torch.testing.assert_close(bd["target"], bt["target"], atol=1e-3, rtol=0)
        assert bd["image"].shape == bt["image"].shape and bd["image"].dtype == torch.float32
        gd, gt = _grey(bd["image"], ds), _grey(bt["image"], ds)
        for j in range(gd.shape[0]):
            rec = ds.records[int(bd["meta"]["index"][j])]
            iw, ih = image_size(open(rec["image_file"], "rb").read())
            p = T.AugParams(
                bd["meta"]["center"][j].double().numpy(),
                bd["meta"]["box_size"][j].double().numpy(),
                float(bd["meta"]["rotation"][j]),
                bool(bd["meta"]["flipped"][j]),
            )
            src = _source_coords(T.affine_matrix(p, ds.input_size, iw), w_in, h_in)
            sx, sy = src[..., 0], src[..., 1]
            inner = (sx >= 1) & (sx <= iw - 2) & (sy >= 1) & (sy <= ih - 2)
            outer = (sx < -1) | (sx > iw) | (sy < -1) | (sy > ih)
            assert inner.sum() > 100
            assert np.abs(gd[j][inner] - gt[j][inner]).mean() < 2.0
            # Pixels whose source is fully outside the image are cv2's zero border in both.
            assert np.abs(gd[j][outer]).max(initial=0) < 1e-3 and np.abs(gt[j][outer]).max(initial=0) < 1e-3
    assert batches == n // 4
    assert 0 < flips < n and rotations > 0  # the recipe really flipped and rotated some samples


@needs_dali
def test_flip_swaps_pairs_onto_the_right_pixels(synthetic_dir):
    """Blobs drawn at the left/right shoulders land where the (swapped) output keypoints say, in DALI's crop."""
    cfg = _cfg(synthetic_dir, recipe="official")
    ds = build_dataset(cfg, "train", item_targets=False)
    rng = np.random.default_rng(case_seed())
    img = np.zeros((300, 360, 3), np.uint8)
    ys, xs = np.mgrid[0:300, 0:360]
    left = np.array([150.0, 140.0]) + rng.uniform(-5, 5, 2)  # COCO 5 = left shoulder
    right = np.array([215.0, 150.0]) + rng.uniform(-5, 5, 2)  # COCO 6 = right shoulder
    for (cx, cy), ch in ((left, 2), (right, 1)):  # BGR file: red blob at the left, green at the right
        img[..., ch] = np.clip(250 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 6.0**2)), 0, 255)
    path = synthetic_dir / "blobs_test.png"
    cv2.imwrite(str(path), img)
    kp = np.zeros((17, 3))
    kp[5] = (*left, 2)
    kp[6] = (*right, 2)
    ds.records = [
        {
            "image_file": str(path),
            "image_id": 1,
            "box": (120.0, 100.0, 130.0, 90.0),
            "keypoints": kp,
            "score": 1.0,
        }
    ] * 16
    ds.data_cfg.official.half_body_prob = 0.0
    ds.data_cfg.official.rotation = 30.0
    ds.data_cfg.official.scale_factor = 0.0  # keep the blobs inside the crop
    ds.set_rng(int(rng.integers(1 << 30)))
    seen = set()
    for b in _loader(ds, list(range(16)), 8):
        rgb = _grey(b["image"], ds)
        for j in range(rgb.shape[0]):
            flipped = bool(b["meta"]["flipped"][j])
            seen.add(flipped)
            # Red = the original left shoulder (5), green = the right (6); a flip swaps their slots.
            for ch, slot in ((0, 6 if flipped else 5), (1, 5 if flipped else 6)):
                w = np.clip(rgb[j, ..., ch], 0, None)
                cy, cx = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
                centroid = np.array([(w * cx).sum(), (w * cy).sum()]) / w.sum()
                assert np.abs(centroid - b["keypoints"][j, slot].numpy()).max() < 0.15
    assert seen == {False, True}


@needs_dali
def test_fp16_and_channels_last_outputs_agree_with_fp32(synthetic_dir):
    cfg = _cfg(synthetic_dir, recipe="paper")
    ds = build_dataset(cfg, "val", item_targets=False)
    keys = list(range(6))
    ref = next(iter(_loader(ds, keys, 6, drop_last=False)))
    out = next(iter(_loader(ds, keys, 6, drop_last=False, dtype="fp16", layout="nhwc")))
    assert out["image"].shape == ref["image"].shape and out["image"].dtype == torch.float16
    assert out["image"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out["image"].float(), ref["image"], atol=2e-2, rtol=1e-3)
    assert "target" not in ref  # validation batches carry no targets


@needs_dali
def test_val_order_partial_batch_and_epochs(synthetic_dir):
    cfg = _cfg(synthetic_dir, val_batch_size=4, batch_size=4)
    loader, sampler = build_dali_loader(cfg, "val")
    assert sampler is None
    n = len(loader.dataset)
    assert n % 4 != 0, "the fixture should give a partial last batch"
    for _ in range(2):  # a second epoch restarts the pipeline
        idx = torch.cat([b["meta"]["index"] for b in loader]).tolist()
        assert idx == list(range(n))
    assert len(loader) == -(-n // 4)
    # Abandoning an epoch half-way must not leak its queued batches into the next one.
    it = iter(loader)
    next(it)
    del it
    assert torch.cat([b["meta"]["index"] for b in loader]).tolist() == list(range(n))
    # Validation crops equal the torch loader's (deterministic test crops), in the same order.
    from rsn_fast.data import build_dataloader

    tl, _ = build_dataloader(cfg, "val")
    for bd, bt in zip(loader, tl, strict=True):
        assert torch.equal(bd["meta"]["index"], bt["meta"]["index"])
        assert (bd["image"] - bt["image"]).abs().mean() < 2.0 / 57.0


@needs_dali
def test_two_shards_see_every_sample_once_per_epoch(synthetic_dir):
    cfg = _cfg(synthetic_dir, batch_size=3, subset=24)
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            loader, sampler = build_dali_loader(cfg, "train", seed=5, shard_id=rank, num_shards=2)
            sampler.set_epoch(epoch)
            batches = [b["meta"]["index"].tolist() for b in loader]
            assert [len(b) for b in batches] == [3] * 4
            got = sum(batches, [])
            seen += got
        assert sorted(seen) == list(range(24))
    # Validation: every sample at least once (DistributedSampler pads with repeats, as in the torch loader).
    cfg = _cfg(synthetic_dir, val_batch_size=4)
    seen = []
    for rank in (0, 1):
        loader, _ = build_dali_loader(cfg, "val", shard_id=rank, num_shards=2)
        seen += [int(i) for b in loader for i in b["meta"]["index"]]
    n = len(loader.dataset)
    assert set(seen) == set(range(n)) and len(seen) == n + n % 2


@needs_dali
def test_short_training_run_on_dali_cpu_batches(synthetic_dir, tmp_path, monkeypatch):
    """The engine's Trainer, fed by the DALI CPU loader through its resumable sampler and per-sample seeds."""
    import rsn_fast.engine.trainer as trainer_mod

    data = synthetic_cfg(synthetic_dir, recipe="official")
    data["data"] = {**data["data"], "backend": "dali", "dali": {"device": "cpu", "threads": 2}}
    cfg = load_config(
        {
            **data,
            "model": {
                "input_size": [64, 64],
                "num_blocks": [1, 1, 1, 1],
                "unit_channels": 16,
                "res_top_channels": 8,
                "expand_times": 4,
            },
            "train": {
                "max_iters": 3,
                "eval_at_end": False,
                "tensorboard": False,
                "log_interval": 1,
                "checkpoint_interval": 1000,
                "lr": 1e-3,
            },
        }
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: OpenMP threads only contend on a shared 2-core machine
    try:
        tr = trainer_mod.Trainer(cfg, str(tmp_path), progress=False)
        assert isinstance(tr.loader, DaliLoader)
        out = tr.fit()
        tr.close()
    finally:
        torch.set_num_threads(threads)
    assert out["iteration"] == 3
    log = (tmp_path / "log.jsonl").read_text()
    assert '"loss"' in log and "NaN" not in log


def test_missing_dali_names_the_package(synthetic_dir, monkeypatch):
    from rsn_fast.data import build_dataloader

    for name in [m for m in sys.modules if m == "nvidia.dali" or m.startswith("nvidia.dali.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes `import nvidia.dali...` fail
    assert not dali_available()
    with pytest.raises(DaliNotInstalledError, match="nvidia-dali-cuda130") as e:
        build_dali_loader(_cfg(synthetic_dir), "train")
    assert "nvidia-dali-cuda120" in str(e.value)
    cfg = _cfg(synthetic_dir)
    cfg.data.backend = "dali"
    with pytest.raises(ImportError, match="pip install nvidia-dali-cuda130"):
        build_dataloader(cfg, "train")


def test_dali_matrix_is_cv2_matrix_in_corner_coordinates():
    rng = np.random.default_rng(case_seed())
    m = np.concatenate([rng.normal(size=(2, 2)) + 2 * np.eye(2), rng.normal(size=(2, 1)) * 20], 1)
    d = dali_matrix(m).astype(np.float64)
    p = rng.uniform(-50, 50, (10, 2))  # source points, cv2 (centre) coordinates
    q = p @ m[:, :2].T + m[:, 2]  # their cv2 outputs
    back = (q + 0.5) @ d[:, :2].T + d[:, 2] - 0.5  # DALI's output→source map in corner coordinates
    np.testing.assert_allclose(back, p, atol=1e-3)


@pytest.mark.parametrize(
    "ext,params", [(".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".png", [])]
)
def test_image_size_reads_headers(ext, params):
    rng = np.random.default_rng(case_seed())
    h, w = (int(v) for v in rng.integers(5, 90, 2))
    ok, buf = cv2.imencode(ext, rng.integers(0, 255, (h, w, 3), dtype=np.uint8), params)
    assert ok and image_size(buf.tobytes()) == (w, h) and image_size(buf) == (w, h)
    assert image_size(b"not an image at all") is None


@needs_dali
def test_build_dataloader_dispatches_on_data_backend(synthetic_dir):
    from rsn_fast.data import build_dataloader

    cfg = _cfg(synthetic_dir)
    cfg.data.backend = "dali"  # the config field (data.backend: torch | dali)
    loader, _ = build_dataloader(cfg, "train")
    assert isinstance(loader, DaliLoader)
    b = next(iter(loader))
    assert b["target"].shape[:3] == (4, 4, 17) and b["image"].shape == (4, 3, 128, 96)
