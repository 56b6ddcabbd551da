"""Truncated and corrupt images: detected (not only empty or missing ones), named, and handled by
``data.bad_images: error | skip`` in the torch dataset, the DALI source and the training log."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from rsn_fast.config import load_config
from rsn_fast.data import build_dataset
from rsn_fast.data.image_io import ImageReadError, read_image
from tests.data.conftest import synthetic_cfg


def _cut(path: str, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


@pytest.fixture
def root(synthetic_dir, tmp_path):
    dst = tmp_path / "syn"
    shutil.copytree(synthetic_dir, dst)
    return dst


def test_half_a_jpeg_decodes_silently_in_cv2_but_is_caught(root):
    path = str(root / "images" / sorted(os.listdir(root / "images"))[0])
    full = read_image(path)
    _cut(path)
    assert cv2.imread(path) is not None  # what the old check relied on: cv2 still returns an image
    with pytest.raises(ImageReadError, match="truncated") as e:
        read_image(path)
    assert path in str(e.value)
    # a complete file with zero padding after the end marker stays valid
    ok = str(root / "padded.jpg")
    cv2.imwrite(ok, full)
    with open(ok, "ab") as f:
        f.write(b"\x00" * 16)
    assert read_image(ok).shape == full.shape


def test_truncated_png_and_empty_file(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    png = str(tmp_path / "a.png")
    cv2.imwrite(png, img)
    assert np.array_equal(read_image(png), img)
    _cut(png, 0.7)
    with pytest.raises(ImageReadError, match="truncated or corrupt PNG.*a.png"):
        read_image(png)
    empty = str(tmp_path / "e.jpg")
    open(empty, "wb").close()
    with pytest.raises(ImageReadError, match="empty image file"):
        read_image(empty)


def test_bad_images_error_names_the_file_and_skip_substitutes_and_counts(root):
    ds = build_dataset(load_config(synthetic_cfg(root)), "train")
    victim = ds.records[1]["image_file"]
    _cut(victim)
    with pytest.raises(ImageReadError, match=f"truncated.*{os.path.basename(victim)}"):
        ds[1]
    skip = build_dataset(load_config(synthetic_cfg(root, bad_images="skip")), "train")
    item = skip[1]
    assert item["skipped"] == 1  # a readable record is used instead
    assert skip.records[int(item["meta"]["index"])]["image_file"] != victim
    good = next(i for i, r in enumerate(skip.records) if r["image_file"] != victim)
    assert skip[good]["skipped"] == 0


def test_dali_source_checks_the_same_way(root):
    from rsn_fast.data.dali import _BatchSource

    ds = build_dataset(load_config(synthetic_cfg(root)), "train")
    victim = ds.records[1]["image_file"]
    _cut(victim)
    with pytest.raises(ImageReadError, match=f"truncated.*{os.path.basename(victim)}"):
        _BatchSource(ds, 2, True, None)._read(1)
    skip = build_dataset(load_config(synthetic_cfg(root, bad_images="skip")), "train")
    used, _, _, skipped = _BatchSource(skip, 2, True, None)._read(1)
    assert (
        skip.records[used]["image_file"] != victim and skipped >= 1
    )  # records sharing the image skipped too


def test_training_log_counts_skipped_images(root, tmp_path):
    from rsn_fast.engine.run_log import read_jsonl
    from rsn_fast.engine.sampling import ResumableSampler
    from rsn_fast.engine.trainer import Trainer

    raw = synthetic_cfg(root, bad_images="skip", batch_size=2)
    raw["model"]["input_size"] = [32, 32]
    raw["train"] = {"max_iters": 3, "log_interval": 1, "eval_at_end": False, "tensorboard": False}
    cfg = load_config(raw)
    ds = build_dataset(cfg, "train")
    files = sorted({r["image_file"] for r in ds.records})
    for f in files[::2]:  # every other image
        _cut(f)
    broken = {i for i, r in enumerate(ds.records) if r["image_file"] in files[::2]}
    used = [i for _, i in ResumableSampler(len(ds), 2, seed=cfg.train.seed)][:6]
    trainer = Trainer(cfg, str(tmp_path / "run"), progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    rows = [r for r in read_jsonl(str(tmp_path / "run" / "log.jsonl")) if "loss" in r]
    assert [r["iter"] for r in rows] == [1, 2, 3]
    assert rows[-1]["skipped_images"] == sum(i in broken for i in used) > 0
