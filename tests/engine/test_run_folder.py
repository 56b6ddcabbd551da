"""train.py / test.py against run folders that hold a previous run or damaged checkpoints (subprocesses, CPU).

Each test copies one finished 6-iteration run (checkpoints 4 and 6, log rows 1..6) and checks that nothing
written before is lost.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest
import torch

from rsn_fast.engine import checkpoint as ckpt
from rsn_fast.engine.run_folder import RunFolderError, prepare
from rsn_fast.engine.run_log import read_jsonl, train_losses
from tests.engine.runs import TEST, env, ok, snapshot, train, truncate


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config, a finished run folder) made once; tests work on copies."""
    from tests.engine.runs import make_tiny

    root = str(tmp_path_factory.mktemp("runs"))
    cfg = make_tiny(root)
    run = os.path.join(root, "finished")
    ok(train(cfg, run))
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [4, 6]
    return cfg, run


def _copy(finished, tmp_path) -> str:
    run = str(tmp_path / "run")
    shutil.copytree(finished[1], run)
    return run


def _iters(run: str) -> list[int]:
    return [r["iter"] for r in read_jsonl(os.path.join(run, "log.jsonl")) if "loss" in r]


def test_second_run_without_resume_is_refused_and_touches_nothing(finished, tmp_path):
    cfg, _ = finished
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    p = train(cfg, run)
    assert p.returncode == 2, p.stderr
    assert "already holds a previous run" in p.stderr and "iter_00000006.pth" in p.stderr
    assert "--resume auto" in p.stderr and "--overwrite" in p.stderr
    assert "Traceback" not in p.stderr
    assert snapshot(run) == before


def test_overwrite_moves_the_old_run_aside(finished, tmp_path):
    cfg, _ = finished
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    ok(train(cfg, run, "--overwrite", "--opt", "train.max_iters=2"))
    (old,) = glob.glob(run + ".old-*")
    assert snapshot(old) == before  # the previous run is intact under its new name
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [2]
    assert _iters(run) == [1, 2]


def test_overwrite_delete_only_when_asked(tmp_path):
    run = tmp_path / "r"
    (run / ckpt.CKPT_DIR).mkdir(parents=True)
    (run / ckpt.CKPT_DIR / "best.pth").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="best.pth"):
        prepare(str(run), None, None, [])
    assert prepare(str(run), "auto", None, []) == ""  # resuming keeps everything
    assert (run / ckpt.CKPT_DIR / "best.pth").exists()
    assert "deleted" in prepare(str(run), None, "delete", [])
    assert not run.exists() and not glob.glob(str(run) + ".old-*")


def test_resume_auto_falls_back_past_a_truncated_newest_checkpoint(finished, tmp_path):
    cfg, first = finished
    run = _copy(finished, tmp_path)
    newest = os.path.join(run, ckpt.CKPT_DIR, "iter_00000006.pth")
    truncate(newest)
    p = train(cfg, run, "--resume", "auto")
    ok(p)
    assert f"skipping unreadable checkpoint {newest}: truncated" in p.stdout
    assert "resumed from" in p.stdout and "iter_00000004.pth at iteration 4" in p.stdout
    assert _iters(run) == [1, 2, 3, 4, 5, 6]  # the replayed iterations 5, 6 are logged once
    replaced = [r["iter"] for r in read_jsonl(os.path.join(run, "log.replaced.jsonl")) if "loss" in r]
    assert replaced == [5, 6]  # the first attempt's rows after the checkpoint are kept aside, not lost
    assert train_losses(os.path.join(run, "log.jsonl")) == train_losses(os.path.join(first, "log.jsonl"))
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [4, 6]
    assert ckpt.read_checkpoint(newest)["iteration"] == 6  # rewritten whole


def test_no_readable_checkpoint_is_an_error_not_a_restart(finished, tmp_path):
    cfg, _ = finished
    run = _copy(finished, tmp_path)
    for _, path in ckpt.iter_checkpoints(run):
        truncate(path)
    before = snapshot(run)
    p = train(cfg, run, "--resume", "auto")
    assert p.returncode == 1
    assert "none of the 2 checkpoints" in p.stderr and "iter_00000004.pth: truncated" in p.stderr
    assert "Traceback" not in p.stderr
    # an explicit path names the file and the reason (not miniz's "central directory" error)
    bad = os.path.join(run, ckpt.CKPT_DIR, "iter_00000006.pth")
    p = train(cfg, run, "--resume", bad)
    assert p.returncode == 1 and f"{bad}: truncated" in p.stderr and "central directory" not in p.stderr
    assert snapshot(run) == before  # nothing deleted, nothing written over the damaged files


def test_resume_into_another_architecture_stops_with_a_short_diff(finished, tmp_path):
    cfg, _ = finished
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    p = train(cfg, run, "--resume", "auto", "--opt", "model.num_blocks=[1,1,1,1]")
    assert p.returncode == 1
    assert "another architecture" in p.stderr and "trained with config 'tiny'" in p.stderr
    assert "model.num_blocks: checkpoint [2, 2, 2, 2], this config [1, 1, 1, 1]" in p.stderr
    assert len(p.stderr) < 3000 and "Traceback" not in p.stderr
    assert snapshot(run) == before


def test_test_py_names_truncated_and_foreign_checkpoints(finished, tmp_path):
    cfg, first = finished
    good = os.path.join(first, ckpt.CKPT_DIR, "iter_00000006.pth")
    bad = str(tmp_path / "trunc.pth")
    shutil.copyfile(good, bad)
    truncate(bad)
    base = [sys.executable, TEST, "--config", cfg, "--no-progress", "--checkpoint"]
    p = subprocess.run([*base, bad], env=env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 1 and f"{bad}: truncated" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(
        [*base, good, "--opt", "model.num_blocks=[1,1,1,1]"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 1 and f"{good}: another architecture" in p.stderr
    assert "model.num_blocks" in p.stderr and len(p.stderr) < 3000
    assert torch.load(good, weights_only=False)["iteration"] == 6


def test_nonfinite_loss_before_any_checkpoint_does_not_point_at_a_missing_folder(finished, tmp_path):
    cfg, _ = finished
    run = str(tmp_path / "nan")
    p = train(cfg, run, env_=env(RSN_FAST_TEST_NAN_AT_ITER="1"))
    assert p.returncode == 3
    assert "non-finite loss" in p.stderr and "No checkpoint was written yet" in p.stderr
    assert ckpt.CKPT_DIR not in p.stderr and not os.path.exists(os.path.join(run, ckpt.CKPT_DIR))


def test_resume_from_another_runs_checkpoint_into_a_folder_with_its_own(finished, tmp_path):
    """--resume PATH outside the run folder, into a folder that holds a run of its own: refused, naming both,
    nothing touched; with --overwrite the folder's run is moved aside intact and PATH continues there."""
    cfg, other = finished
    theirs = os.path.join(other, ckpt.CKPT_DIR, "iter_00000004.pth")
    run = _copy(finished, tmp_path)  # a run of its own: checkpoints 4 and 6, log rows 1..6
    before, before_other = snapshot(run), snapshot(other)
    p = train(cfg, run, "--resume", theirs)
    assert p.returncode == 2, p.stderr
    assert f"the run folder {run} already holds a run of its own" in p.stderr
    assert f"names a checkpoint outside it ({theirs})" in p.stderr and "iter_00000006.pth" in p.stderr
    assert "--resume auto" in p.stderr and f"--resume {theirs} --overwrite" in p.stderr
    assert "Traceback" not in p.stderr
    assert snapshot(run) == before
    p = train(cfg, run, "--resume", theirs, "--overwrite", "--opt", "train.max_iters=5")
    ok(p)
    (old,) = glob.glob(run + ".old-*")
    assert snapshot(old) == before and snapshot(other) == before_other
    assert f"resumed from {theirs} at iteration 4" in p.stdout
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [5] and _iters(run) == [5]


def test_prepare_for_a_checkpoint_inside_or_outside_the_run_folder(tmp_path):
    from rsn_fast.train import parse_args

    run, other = tmp_path / "run", tmp_path / "other"
    for d in (run, other):
        (d / ckpt.CKPT_DIR).mkdir(parents=True)
        (d / ckpt.CKPT_DIR / "iter_00000002.pth").write_bytes(b"x")
    own, theirs = (
        str(run / ckpt.CKPT_DIR / "iter_00000002.pth"),
        str(other / ckpt.CKPT_DIR / "iter_00000002.pth"),
    )
    before = snapshot(str(run))
    assert prepare(str(run), own, None, []) == ""  # its own checkpoint, by path (a relative one too)
    assert prepare(str(run), os.path.relpath(own), None, []) == ""
    with pytest.raises(RunFolderError, match="outside it"):
        prepare(str(run), theirs, None, [])
    with pytest.raises(RunFolderError, match="would move away the checkpoint"):
        prepare(str(run), own, "move", [])
    assert (
        prepare(str(run), theirs, None, [], restarted=True) == ""
    )  # a torchrun restart: this job's own files
    assert (
        prepare(str(tmp_path / "new"), theirs, None, []) == ""
    )  # an empty folder may start from any checkpoint
    assert snapshot(str(run)) == before
    with pytest.raises(SystemExit):
        parse_args(["--config", "c", "--resume", "--overwrite"])  # auto and --overwrite contradict each other
    assert parse_args(["--config", "c", "--resume", theirs, "--overwrite"]).overwrite == "move"
    assert "deleted" in prepare(str(run), theirs, "delete", [])
    assert not run.exists() and os.path.isfile(theirs)
