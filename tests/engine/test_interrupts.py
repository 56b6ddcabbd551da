"""SIGINT / SIGTERM sent to a real training subprocess mid-run, and log/TensorBoard continuation on resume.

A stopped run must finish its iteration, leave a readable checkpoint of it, print the resume command and exit
130 (SIGINT) / 143 (SIGTERM); resuming must log every iteration exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from rsn_fast.engine import checkpoint as ckpt
from rsn_fast.engine.run_log import read_jsonl
from tests.engine.runs import env, make_tiny, ok, train, train_cmd


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("interrupts"))


def _loss_iters(run: str) -> list[int]:
    path = os.path.join(run, "log.jsonl")
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n") and '"loss"' in line:
                rows.append(line)
    import json

    return [json.loads(r)["iter"] for r in rows]


def _start(cfg: str, run: str, *extra: str, nproc: int = 1) -> subprocess.Popen:
    # A session of its own, so a signal to its process group reaches it and its loader workers, as Ctrl-C in a
    # terminal does.
    return subprocess.Popen(
        train_cmd(cfg, run, *extra, nproc=nproc),
        env=env(),
        cwd=os.path.dirname(run),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """communicate(); on a timeout the process group and its children are killed, so no run is left behind."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in _children(proc.pid):  # torchrun's workers run in sessions of their own
            os.kill(child, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def _wait_for_iteration(proc: subprocess.Popen, run: str, it: int, timeout: float = 180) -> None:
    t0 = time.time()
    while not _loss_iters(run) or _loss_iters(run)[-1] < it:
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.communicate()[1][-3000:]}"
        if time.time() - t0 > timeout:
            _finish(proc, 0.1)
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def _rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            envs = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    return int(envs[b"RANK"]) if b"RANK" in envs else None


def test_sigint_finishes_the_iteration_checkpoints_and_resumes_without_duplicates(root):
    cfg = make_tiny(root, max_iters=16, checkpoint_interval=4)
    run = os.path.join(root, "sigint")
    proc = _start(cfg, run, "--opt", "data.workers=1")  # a loader worker gets the Ctrl-C too
    _wait_for_iteration(proc, run, 5)
    os.killpg(proc.pid, signal.SIGINT)  # the whole process group, like Ctrl-C in a terminal
    out, err = _finish(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    stopped = _loss_iters(run)[-1]
    assert 5 <= stopped < 16
    newest = os.path.join(run, ckpt.CKPT_DIR, f"iter_{stopped:08d}.pth")
    assert f"stopped after iteration {stopped}; checkpoint {newest}" in out
    assert "resume with: " in out and out.rstrip().endswith("--resume auto")
    assert ckpt.read_checkpoint(newest)["iteration"] == stopped  # the finished iteration is saved
    earlier = (stopped - 1) // 4 * 4
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [earlier, stopped]  # keep_last 2, nothing else lost
    assert not [f for f in os.listdir(os.path.join(run, ckpt.CKPT_DIR)) if f.endswith(".tmp")]
    ok(train(cfg, run, "--resume", "auto", "--opt", "data.workers=1"))
    assert _loss_iters(run) == list(range(1, 17))  # every iteration logged exactly once
    assert not os.path.exists(os.path.join(run, "log.replaced.jsonl"))  # nothing was replayed


def test_sigterm_to_the_process_group_with_a_loader_worker_exits_143_with_a_checkpoint(root):
    # A scheduler's SIGTERM reaches the loader worker too; without the worker ignoring it, the main process
    # would die with "DataLoader worker exited unexpectedly" instead of finishing the iteration.
    cfg = make_tiny(root, max_iters=200, checkpoint_interval=50)
    run = os.path.join(root, "sigterm")
    proc = _start(cfg, run, "--opt", "data.workers=1")
    _wait_for_iteration(proc, run, 3)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = _finish(proc)
    assert proc.returncode == 143, err[-3000:]
    stopped = _loss_iters(run)[-1]
    assert f"stopped after iteration {stopped}" in out and "Traceback" not in err
    path = os.path.join(run, ckpt.CKPT_DIR, f"iter_{stopped:08d}.pth")
    assert ckpt.read_checkpoint(path)["iteration"] == stopped


def test_second_sigint_exits_at_once_without_damaging_checkpoints(root):
    cfg = make_tiny(
        root, max_iters=200, checkpoint_interval=1
    )  # a checkpoint every iteration: likely mid-save
    run = os.path.join(root, "double")
    proc = _start(cfg, run)
    _wait_for_iteration(proc, run, 3)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = _finish(proc, 60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    folder = os.path.join(run, ckpt.CKPT_DIR)
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    found = ckpt.iter_checkpoints(run)
    assert found and all(ckpt.read_checkpoint(p)["iteration"] == i for i, p in found)


def test_resume_after_a_kill_continues_log_and_tensorboard_without_duplicates(root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_tiny(root, max_iters=6, checkpoint_interval=2, tensorboard=True)
    run = os.path.join(root, "killed")
    p = train(cfg, run, env_=env(RSN_FAST_TEST_KILL_AT_ITER="3"))
    assert p.returncode == -9  # SIGKILL after iteration 3: rows of iteration 3 are past the checkpoint (2)
    assert _loss_iters(run) == [1, 2, 3]
    ok(train(cfg, run, "--resume", "auto"))
    assert _loss_iters(run) == [1, 2, 3, 4, 5, 6]
    moved = [r["iter"] for r in read_jsonl(os.path.join(run, "log.replaced.jsonl")) if "loss" in r]
    assert moved == [3]
    acc = EventAccumulator(os.path.join(run, "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]


def test_sigterm_to_one_ddp_rank_stops_both_after_the_same_iteration(root):
    cfg = make_tiny(root, max_iters=200, checkpoint_interval=50)
    run = os.path.join(root, "ddp")
    proc = _start(cfg, run, nproc=2)
    _wait_for_iteration(proc, run, 3)
    ranks = {_rank_of(c): c for c in _children(proc.pid)}
    os.kill(ranks[1], signal.SIGTERM)  # only rank 1 gets it: rank 0 must learn of it from the all-reduce
    out, err = _finish(proc)
    stopped = _loss_iters(run)[-1]
    assert stopped < 200
    assert f"stopped after iteration {stopped}" in out  # rank 0 wrote the checkpoint and said so
    assert "resume with: torchrun --nproc_per_node 2" in out
    assert (
        ckpt.read_checkpoint(os.path.join(run, ckpt.CKPT_DIR, f"iter_{stopped:08d}.pth"))["world_size"] == 2
    )
    assert "exitcode: 143" in err or "exitcode  : 143" in err, err[-3000:]
