"""Checkpoint files on disk: verification after the atomic write and on read, reasons named, resume choice, and
retention by the current run (rsn_fast.engine.checkpoint). Folders of checkpoints are written by the tests."""

from __future__ import annotations

import os

import pytest
import torch

from rsn_fast.config import load_config
from rsn_fast.engine import checkpoint as ckpt
from rsn_fast.models.checkpoint import CheckpointError


def _state(it: int) -> dict:
    g = torch.Generator().manual_seed(it)
    return {"format": "rsn_fast", "model": {"w": torch.randn(64, 64, generator=g)}, "iteration": it}


def _write_run(run: str, iters=(2, 4, 6)) -> dict[int, str]:
    return {it: ckpt.save_iter_checkpoint(_state(it), run, it, keep_last=10) for it in iters}


def _truncate(path: str) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _flip_byte_in_tensor_data(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    i = data.index(b"/data/0") + 200  # inside the first tensor's bytes (the record follows its header)
    data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _snapshot(folder: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_truncate, "truncated"),
        (_flip_byte_in_tensor_data, "corrupt"),
        (lambda p: open(p, "wb").close(), "empty"),
        (lambda p: open(p, "wb").write(b"not a torch file at all" * 10), "not a checkpoint"),
        (lambda p: torch.save({"weights": torch.ones(2)}, p), "not a checkpoint"),
        (os.remove, "missing"),
    ],
)
def test_every_damage_is_named_with_file_and_reason(tmp_path, damage, reason):
    path = _write_run(str(tmp_path), iters=(2,))[2]
    assert ckpt.read_checkpoint(path)["iteration"] == 2
    damage(path)
    with pytest.raises(ckpt.CheckpointReadError) as e:
        ckpt.read_checkpoint(path)
    assert e.value.reason == reason and e.value.path == path
    assert str(e.value).startswith(f"{path}: {reason}")
    assert len(str(e.value)) < 400


def test_a_torn_write_is_caught_before_the_rename(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pth")
    ckpt.atomic_save(_state(1), path)
    before = open(path, "rb").read()
    real_save = torch.save

    def torn_save(obj, f, *a, **k):  # the write "succeeds" but only part of the bytes reach the file
        buf = __import__("io").BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:-300])

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(ckpt.CheckpointReadError, match="truncated"):
        ckpt.atomic_save(_state(2), path)
    assert os.listdir(tmp_path) == ["c.pth"]  # no temporary file left behind
    assert open(path, "rb").read() == before  # the previous checkpoint is untouched


def test_resume_auto_skips_unreadable_newest_and_names_it(tmp_path):
    run = str(tmp_path)
    paths = _write_run(run)
    _truncate(paths[6])
    path, skipped = ckpt.find_resumable(run)
    assert path == paths[4]
    assert [(e.path, e.reason) for e in skipped] == [(paths[6], "truncated")]
    with pytest.warns(UserWarning, match="iter_00000006.pth: truncated"):
        assert ckpt.find_latest(run) == paths[4]


def test_resume_auto_stops_when_no_checkpoint_is_readable(tmp_path):
    run = str(tmp_path)
    paths = _write_run(run, iters=(2, 4))
    _truncate(paths[4])
    _flip_byte_in_tensor_data(paths[2])
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as e:
        ckpt.find_resumable(run)
    msg = str(e.value)
    assert "none of the 2 checkpoints" in msg
    assert f"{paths[4]}: truncated" in msg and f"{paths[2]}: corrupt" in msg
    assert _snapshot(run) == before  # nothing deleted or rewritten
    assert ckpt.find_resumable(str(tmp_path / "fresh")) == (None, [])


def test_retention_keeps_this_runs_checkpoints_over_higher_numbered_old_ones(tmp_path):
    run = str(tmp_path)
    old = _write_run(run, iters=(100, 200))  # an earlier run's files carry higher iteration numbers
    mine: list[int] = []
    for it in (2, 4, 6):
        ckpt.save_iter_checkpoint(_state(it), run, it, keep_last=2, this_run=mine)
        mine.append(it)
        assert os.path.isfile(os.path.join(run, ckpt.CKPT_DIR, f"iter_{it:08d}.pth"))  # the new one survives
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [4, 6]
    assert not any(os.path.exists(p) for p in old.values())
    # keep_last=1 still never deletes the newest of this run
    ckpt.save_iter_checkpoint(_state(8), run, 8, keep_last=1, this_run=mine)
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [8]


def test_retention_without_run_history_orders_by_iteration(tmp_path):
    run = str(tmp_path)
    for it in (2, 4, 6, 8):
        ckpt.save_iter_checkpoint(_state(it), run, it, keep_last=2)
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [6, 8]


@pytest.fixture(scope="module")
def two_archs():
    from rsn_fast.models import build_model

    torch.manual_seed(0)
    a = load_config({"name": "rsn18_small", "model": {"input_size": [32, 32]}})
    b = load_config({"name": "rsn_other", "model": {"input_size": [32, 32], "num_blocks": [1, 1, 1, 1]}})
    return (a, build_model(a)), (b, build_model(b))


def test_another_architecture_is_a_short_checkpoint_error_naming_the_stored_config(tmp_path, two_archs):
    (cfg_a, model_a), (cfg_b, model_b) = two_archs
    from rsn_fast.config import to_dict

    path = str(tmp_path / "a.pth")
    ckpt.atomic_save({"format": "rsn_fast", "model": model_a.state_dict(), "config": to_dict(cfg_a)}, path)
    before = {k: v.clone() for k, v in model_b.state_dict().items()}
    with pytest.raises(ckpt.CheckpointReadError) as e:
        ckpt.load_model_weights(model_b, path, cfg=cfg_b)
    msg = str(e.value)
    assert e.value.reason == "another architecture" and msg.startswith(path)
    assert "trained with config 'rsn18_small'" in msg
    assert "model.num_blocks: checkpoint [2, 2, 2, 2], this config [1, 1, 1, 1]" in msg
    assert len(msg) < 2500, len(msg)  # a short diff, not every key of load_state_dict
    assert all(torch.equal(before[k], v) for k, v in model_b.state_dict().items())  # model untouched
    ckpt.load_model_weights(model_a, path, cfg=cfg_a)  # the right architecture loads


def test_foreign_formats_name_the_file_too(tmp_path, two_archs):
    (_, model_a), (_, model_b) = two_archs
    mm = str(tmp_path / "mmpose.pth")
    torch.save({"state_dict": model_b.state_dict()}, mm)  # an MMPose-style file of another architecture
    with pytest.raises(ckpt.CheckpointReadError, match="another architecture") as e:
        ckpt.load_model_weights(model_a, mm)
    assert str(e.value).startswith(mm) and len(str(e.value)) < 2500
    _truncate(mm)
    with pytest.raises(ckpt.CheckpointReadError, match=f"{mm}: truncated"):
        ckpt.load_model_weights(model_a, mm)
