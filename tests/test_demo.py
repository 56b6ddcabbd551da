"""The demo's data folder (manifest of generation settings) and run folder checks; cheap (a few tiny images)."""

from __future__ import annotations

import json
import os

import pytest

from rsn_fast import demo
from rsn_fast.engine import checkpoint as ckpt


def _num_images(data_dir, split="train") -> int:
    with open(os.path.join(data_dir, "annotations", f"person_keypoints_{split}.json")) as f:
        return len(json.load(f)["images"])


def test_data_made_with_other_settings_is_regenerated_and_recorded(tmp_path, capsys):
    data = str(tmp_path / "syn")
    m = demo.ensure_dataset(data, 3, 2, 0)
    assert json.load(open(os.path.join(data, demo.MANIFEST))) == m
    assert (m["num_train"], m["num_val"], m["difficulty"]) == (3, 2, 0) and _num_images(data) == 3
    stamp = os.path.getmtime(os.path.join(data, "annotations", "person_keypoints_train.json"))
    demo.ensure_dataset(data, 3, 2, 0)  # same settings: reused as is
    assert os.path.getmtime(os.path.join(data, "annotations", "person_keypoints_train.json")) == stamp
    assert "using the synthetic data set" in capsys.readouterr().out
    m = demo.ensure_dataset(data, 5, 2, 0)  # --train 5 into a folder made with --train 3
    assert "num_train 3 -> 5" in capsys.readouterr().out
    assert _num_images(data) == 5 and m["num_train"] == 5
    demo.ensure_dataset(data, 5, 2, 1)  # another difficulty
    assert json.load(open(os.path.join(data, demo.MANIFEST)))["difficulty"] == 1
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # no half-made folder left


def test_data_without_manifest_is_refused_not_reused(tmp_path):
    data = tmp_path / "mine"
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "person_keypoints_train.json").write_text("{}")
    with pytest.raises(demo.DemoDataError, match="no manifest.json"):
        demo.ensure_dataset(str(data), 3, 2, 0)
    assert (data / "annotations" / "person_keypoints_train.json").read_text() == "{}"  # untouched
    demo.ensure_dataset(str(data), 3, 2, 0, regenerate=True)
    assert _num_images(str(data)) == 3


def test_a_run_on_other_data_is_moved_aside_not_resumed(tmp_path):
    work = tmp_path / "work"
    (work / ckpt.CKPT_DIR).mkdir(parents=True)
    (work / ckpt.CKPT_DIR / "iter_00000010.pth").write_bytes(b"old run")
    a = {"num_train": 3, "num_val": 2, "seed": 0, "difficulty": 0, "version": "x"}
    demo._check_run_folder(str(work), a)  # no record of its data: moved aside
    (old,) = [p for p in os.listdir(tmp_path) if p.startswith("work.old-")]
    assert (tmp_path / old / ckpt.CKPT_DIR / "iter_00000010.pth").read_bytes() == b"old run"
    (work / ckpt.CKPT_DIR).mkdir()
    (work / ckpt.CKPT_DIR / "iter_00000020.pth").write_bytes(b"this data")
    demo._check_run_folder(str(work), {**a, "version": "y"})  # same data (version aside): kept for resume
    assert (work / ckpt.CKPT_DIR / "iter_00000020.pth").exists()
    demo._check_run_folder(str(work), {**a, "num_train": 4})
    assert not (work / ckpt.CKPT_DIR / "iter_00000020.pth").exists()
    assert len([p for p in os.listdir(tmp_path) if p.startswith("work.old-")]) == 2
