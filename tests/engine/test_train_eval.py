"""End-to-end tests of rsn_fast/train.py and rsn_fast/test.py on CPU: gloo DDP, exact resume, torchrun restart of
a killed worker, non-finite loss, clean exits, and evaluation gathered from uneven shards.

A tiny RSN-18 (32×32 input) trains on a small synthetic set made once per module. Runs are subprocesses (plain
python or torchrun), as a user would start them; the run folder's log.jsonl holds the per-iteration losses.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from rsn_fast.engine import checkpoint as ckpt
from rsn_fast.engine.run_log import read_jsonl, train_losses
from tests.engine.runs import TEST, TORCHRUN, TRAIN, make_tiny
from tests.engine.runs import env as _env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A synthetic data set and a tiny-run config; returns the config path."""
    return make_tiny(str(tmp_path_factory.mktemp("engine")))


def _run(cmd: list[str], env: dict, cwd: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _train(cfg: str, run_dir: str, nproc: int, *extra: str, env: dict | None = None, restarts: int = 0):
    if nproc == 1:
        cmd = [sys.executable, TRAIN]
    else:
        cmd = [*TORCHRUN, "--nproc_per_node", str(nproc), "--max-restarts", str(restarts), TRAIN]
    cmd += ["--config", cfg, "--work-dir", run_dir, "--no-progress", *extra]
    return _run(cmd, env or _env(), cwd=os.path.dirname(run_dir))


def _ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, (
        f"exit code {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}"
    )


@pytest.fixture(scope="module")
def interrupted(tiny, tmp_path_factory) -> tuple[str, str]:
    """(an uninterrupted 6-iteration run, the same run killed after iteration 3: its newest checkpoint is
    iteration 2), made once; tests resume copies of the second."""
    root = tmp_path_factory.mktemp("interrupted")
    full, cut = str(root / "full"), str(root / "cut")
    _ok(_train(tiny, full, 1))
    p = _train(tiny, cut, 1, env=_env(RSN_FAST_TEST_KILL_AT_ITER="3"))
    assert p.returncode == -9  # killed itself after iteration 3; the newest checkpoint is iteration 2
    assert [i for i, _ in ckpt.iter_checkpoints(cut)] == [2]
    a = train_losses(os.path.join(full, "log.jsonl"))
    assert sorted(a) == list(range(1, 7)) and len(set(a.values())) == 6
    return full, cut


def _copy(run: str, dest) -> str:
    shutil.copytree(run, str(dest))
    return str(dest)


def _resumed_rows(run: str) -> tuple[str, list[int]]:
    """(the "resumed from" message, the iterations logged after it) of the one resume in ``run``'s log."""
    rows = read_jsonl(os.path.join(run, "log.jsonl"))
    starts = [i for i, r in enumerate(rows) if "resumed from" in r.get("msg", "")]
    assert len(starts) == 1, [r.get("msg") for r in rows]
    return rows[starts[0]]["msg"], [int(r["iter"]) for r in rows[starts[0] :] if "iter" in r and "loss" in r]


def test_single_process_resume_is_exact(tiny, interrupted, tmp_path):
    full, first = interrupted
    cut = _copy(first, tmp_path / "cut")
    _ok(_train(tiny, cut, 1, "--resume", "auto"))
    a, b = train_losses(os.path.join(full, "log.jsonl")), train_losses(os.path.join(cut, "log.jsonl"))
    # the resumed process ran only the iterations after the checkpoint: equal losses alone would also come from
    # a deterministic rerun from scratch that loaded nothing
    msg, iters = _resumed_rows(cut)
    assert "iter_00000002" in msg and iters == [3, 4, 5, 6]
    assert a == b  # bit-identical losses, iterations 3..6 recomputed after the resume
    state = torch.load(ckpt.find_latest(cut), weights_only=False)
    assert state["iteration"] == 6 and state["format"] == "rsn_fast" and state["seed"] == 0
    assert [i for i, _ in ckpt.iter_checkpoints(cut)] == [4, 6]  # keep_last: 2
    assert os.path.isfile(os.path.join(cut, "config.yaml"))


def _equal(a, b, where: str = "") -> None:
    """``a == b`` for nested dicts/lists/tuples of tensors, arrays and plain values, naming the first difference."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(map(str, a)) == sorted(map(str, b)), where
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_resume_restores_the_checkpoint_state(tiny, interrupted, tmp_path):
    """Right after the resume, the trainer holds exactly the checkpoint's state: weights, BN buffers, optimizer,
    schedule, scaler, iteration, counters and the process's RNG streams (in-process, on a copy of the run)."""
    from rsn_fast.config import load_config
    from rsn_fast.engine.trainer import Trainer, seed_everything

    cut = _copy(interrupted[1], tmp_path / "cut")
    path = os.path.join(cut, ckpt.CKPT_DIR, "iter_00000002.pth")
    state = torch.load(path, weights_only=False)
    # a checkpoint that differs from a fresh trainer everywhere it is compared (so a load that does nothing fails)
    assert state["iteration"] == 2 and state["scheduler"]["last_epoch"] == 2
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {2}
    assert {int(v) for k, v in state["model"].items() if k.endswith("num_batches_tracked")} == {2}
    saved_rng = ckpt.get_rng_state()
    # Training draws nothing from the process's own streams (samples are seeded by (seed, epoch, index)), so the
    # saved ones equal a fresh seeding; the file gets advanced ones, which only a restore can bring back.
    ckpt.set_rng_state(state["rng"][0])
    random.random(), np.random.rand(), torch.rand(1)
    state["rng"][0] = ckpt.get_rng_state()
    seed_everything(0 + 1)  # what the trainer seeds rank 0 with before it loads the checkpoint
    assert not torch.equal(ckpt.get_rng_state()["torch"], state["rng"][0]["torch"])
    ckpt.atomic_save(state, path)
    trainer = Trainer(load_config(tiny), cut, resume="auto", progress=False)
    try:
        resumed_rng = ckpt.get_rng_state()  # before anything else in this process draws from it
        assert trainer.last_checkpoint == path and trainer.iteration == 2
        _equal(trainer.plain.state_dict(), state["model"], "model")  # parameters and BN buffers
        _equal(trainer.optimizer.state_dict(), state["optimizer"], "optimizer")
        _equal(trainer.scheduler.state_dict(), state["scheduler"], "scheduler")
        _equal(trainer.scaler.state_dict(), state["scaler"], "scaler")
        assert trainer.optimizer.param_groups[0]["lr"] == state["scheduler"]["_last_lr"][0]
        _equal(
            (trainer.best_ap, trainer.skipped_steps, trainer.skipped_images),
            (state["best_ap"], state["skipped_steps"], state["skipped_images"]),
        )
        _equal(resumed_rng, state["rng"][0], "rng")
        assert trainer.sampler.seed == state["seed"] == 0
    finally:
        trainer.close()
        ckpt.set_rng_state(saved_rng)


def test_resume_keeps_the_checkpoints_seed(tiny, interrupted, tmp_path):
    """--opt train.seed=<other> on resume: the data order and augmentation still come from the checkpoint (the
    losses equal the uninterrupted run's), with a warning; under seed 5 the same iterations would see other data."""
    full, first = interrupted
    cut = _copy(first, tmp_path / "cut")
    p = _train(tiny, cut, 1, "--resume", "auto", "--opt", "train.seed=5")
    _ok(p)
    assert "train.seed 5 of this config differs from the checkpoint's 0: resuming with 0" in p.stdout
    msg, iters = _resumed_rows(cut)
    assert "iter_00000002" in msg and iters == [3, 4, 5, 6]
    assert train_losses(os.path.join(cut, "log.jsonl")) == train_losses(os.path.join(full, "log.jsonl"))
    assert torch.load(ckpt.find_latest(cut), weights_only=False)["seed"] == 0
    assert "seed: 0" in open(os.path.join(cut, "config.yaml")).read()
    # the control: iterations 3..6 under seed 5 would get other samples and other augmentation than under seed 0
    from rsn_fast.config import load_config
    from rsn_fast.engine.distributed import DistInfo
    from rsn_fast.engine.trainer import build_train_loader

    batches = {}
    for seed in (0, 5):
        loader, sampler = build_train_loader(load_config(tiny, [f"train.seed={seed}"]), DistInfo())
        sampler.set_epoch(0, 2)
        batches[seed] = [b for _, b in zip(range(4), loader)]
    assert len(batches[0]) == 4
    assert all(not torch.equal(x["image"], y["image"]) for x, y in zip(batches[0], batches[5]))
    loader, sampler = build_train_loader(load_config(tiny), DistInfo())
    ds = loader.dataset
    order = [k[1] for k in sampler]  # the same sample under seeds 0 and 5: other augmentation
    assert not torch.equal(
        torch.as_tensor(type(ds)(ds.inner, 0)[(0, order[4])]["image"]),
        torch.as_tensor(type(ds)(ds.inner, 5)[(0, order[4])]["image"]),
    )


def test_targets_drawn_on_the_device_equal_worker_targets(tiny, tmp_path):
    """data.targets_on: device (what a GPU run uses by default) trains exactly like targets drawn in workers."""
    workers, device = str(tmp_path / "workers"), str(tmp_path / "device")
    _ok(_train(tiny, workers, 1, "--opt", "train.max_iters=3", "data.targets_on=workers"))
    _ok(_train(tiny, device, 1, "--opt", "train.max_iters=3", "data.targets_on=device"))
    a = train_losses(os.path.join(workers, "log.jsonl"))
    b = train_losses(os.path.join(device, "log.jsonl"))
    assert sorted(a) == [1, 2, 3] and a == b


def test_two_process_ddp_resume_after_killed_worker_is_exact(tiny, tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    _ok(_train(tiny, full, 2))
    # Rank 1 SIGKILLs itself after iteration 3; torchrun restarts both workers, which resume from iteration 2.
    p = _train(tiny, cut, 2, env=_env(RSN_FAST_TEST_KILL_AT_ITER="3"), restarts=1)
    _ok(p)
    assert os.path.isfile(os.path.join(cut, ".test_killed_once"))
    msgs = [r["msg"] for r in read_jsonl(os.path.join(cut, "log.jsonl")) if "msg" in r]
    assert any("resumed from" in m and "iter_00000002" in m for m in msgs), msgs
    a, b = train_losses(os.path.join(full, "log.jsonl")), train_losses(os.path.join(cut, "log.jsonl"))
    assert sorted(a) == list(range(1, 7)) and a == b
    # 2 × batch 2 per iteration differs from 1 × batch 2: the two processes really trained on different shards
    rows = [r for r in read_jsonl(os.path.join(full, "log.jsonl")) if "img_s" in r]
    assert all(r["skipped_steps"] == 0 for r in rows)
    assert "2 process(es)" in " ".join(r.get("msg", "") for r in read_jsonl(os.path.join(full, "log.jsonl")))


def test_nonfinite_loss_stops_with_last_good_checkpoint(tiny, tmp_path):
    run = str(tmp_path / "nan")
    p = _train(tiny, run, 1, env=_env(RSN_FAST_TEST_NAN_AT_ITER="3"))
    assert p.returncode == 3
    assert "non-finite loss" in p.stderr and "iteration 3" in p.stderr
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [2]
    state = torch.load(ckpt.find_latest(run), weights_only=False)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not [f for f in os.listdir(os.path.join(run, ckpt.CKPT_DIR)) if f.endswith(".tmp")]


def test_two_process_runs_exit_cleanly_every_time(tiny, tmp_path):
    # gloo jobs used to abort (SIGABRT) at interpreter exit now and then; the entry point must always exit 0.
    for i in range(3):
        p = _train(tiny, str(tmp_path / f"r{i}"), 2, "--opt", "train.max_iters=1")
        _ok(p)
        assert "SIGABRT" not in p.stderr and "Signal 6" not in p.stderr


def test_eval_gathers_uneven_shards_exactly_once(tiny, tmp_path):
    run = str(tmp_path / "run")
    _ok(_train(tiny, run, 1, "--opt", "train.max_iters=2"))
    weights = ckpt.find_latest(run)
    outs = {}
    for nproc in (1, 2):
        out = str(tmp_path / f"res{nproc}.json")
        cmd = [sys.executable, TEST] if nproc == 1 else [*TORCHRUN, "--nproc_per_node", "2", TEST]
        # 7 detections: shards of 4 and 3 (a padded sampler would have evaluated one box twice)
        cmd += [
            "--config",
            tiny,
            "--checkpoint",
            weights,
            "--out",
            out,
            "--no-progress",
            "--dets",
            str(tmp_path / "dets.json"),
        ]
        dets = json.load(open(os.path.join(os.path.dirname(tiny), "syn", "detections_val.json")))[:7]
        json.dump(dets, open(tmp_path / "dets.json", "w"))
        p = _run(cmd, _env(), cwd=str(tmp_path))
        _ok(p)
        assert p.stdout.strip().splitlines()[-1].startswith("AP: ")
        assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in p.stdout
        outs[nproc] = json.load(open(out))
    one, two = outs[1], outs[2]
    assert len(one) == 7 and len(two) == 7
    assert sorted(r["index"] for r in two) == list(range(7))
    key = lambda r: r["index"]  # noqa: E731
    for a, b in zip(sorted(one, key=key), sorted(two, key=key)):
        assert a["image_id"] == b["image_id"]
        assert a["keypoints"] == pytest.approx(b["keypoints"], abs=1e-4)
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
