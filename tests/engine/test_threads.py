"""CPU thread choice: the process's affinity, OMP_NUM_THREADS / train.cpu_threads when set, the tuner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rsn_fast.engine.threads import ThreadTuner
from tests.engine.runs import REPO, TEST

_PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
os.sched_setaffinity(0, {cpus})
from rsn_fast.engine.threads import configure_cpu_threads, make_tuner
import torch
line = configure_cpu_threads({setting!r})
print(line, torch.get_num_threads(), make_tuner() is not None, os.environ.get("OMP_WAIT_POLICY"))
"""


def _probe(cpus: set[int], setting="auto", **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "PYTHONPATH")}
    e.update(env)
    code = _PROBE.format(repo=REPO, cpus=cpus, setting=setting)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120
    ).stdout


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_threads_follow_affinity_and_honour_the_environment():
    one = {min(os.sched_getaffinity(0))}
    out = _probe(one)
    # one allowed core → one thread, however many the machine has; nothing to tune; no wait policy imposed
    assert out.split()[-3:] == ["1", "False", "None"], out
    out = _probe(one, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")  # wins over the 1-core affinity
    assert "(OMP_NUM_THREADS)" in out and out.split()[-3:] == ["2", "False", "ACTIVE"], out
    out = _probe(one, setting=2)  # train.cpu_threads: 2 fixes the count (no tuning)
    assert "(train.cpu_threads)" in out and out.split()[-3:] == ["2", "False", "None"], out
    out = _probe(one, setting=3, OMP_NUM_THREADS="1")  # OMP_NUM_THREADS wins over train.cpu_threads
    assert "(OMP_NUM_THREADS)" in out and out.split()[-3:] == ["1", "False", "None"], out


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 allowed cores"
)
def test_auto_tunes_among_the_affinity_cores_and_fewer():
    two = set(sorted(os.sched_getaffinity(0))[:2])
    out = _probe(two)
    assert "tuned among 2, 1 from the iteration times" in out and out.split()[-3:] == ["2", "True", "None"], (
        out
    )


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_test_py_uses_the_same_thread_policy(tmp_path):
    """rsn_fast/test.py (evaluation) chooses its CPU threads like train.py: the affinity's cores, no wait
    policy imposed, OMP_NUM_THREADS / OMP_WAIT_POLICY kept when set. (The checkpoint is
    missing, so it stops right after the choice.)"""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\nmodel: {input_size: [32, 32]}\n")
    one = {min(os.sched_getaffinity(0))}
    cmd = [
        sys.executable,
        TEST,
        "--config",
        str(cfg),
        "--checkpoint",
        str(tmp_path / "none.pth"),
        "--device",
        "cpu",
    ]
    base = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "PYTHONPATH")
    }
    for extra, line in (
        ({}, "CPU threads: 1 (cores in this process's affinity), wait policy default"),
        (
            {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
            "CPU threads: 2 (OMP_NUM_THREADS), wait policy ACTIVE",
        ),
    ):
        p = subprocess.run(
            cmd,
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.sched_setaffinity(0, one),
        )
        assert p.returncode == 1 and "none.pth: missing" in p.stderr, p.stderr[-2000:]
        assert line in p.stdout.splitlines(), p.stdout


class _Clock:
    """Iteration seconds per thread count, switchable mid-run (a fake machine for ThreadTuner)."""

    def __init__(self, speeds: dict[int, float]):
        self.speeds = dict(speeds)
        self.threads = 2
        self.calls: list[int] = []

    def set(self, n: int) -> None:
        self.calls.append(n)
        self.threads = n

    def get(self) -> int:
        return self.threads


def _run(tuner: ThreadTuner, clock: _Clock, iters: int) -> list[int]:
    """The thread count of each of ``iters`` iterations."""
    used = []
    for _ in range(iters):
        used.append(clock.threads)
        tuner.step(clock.speeds[clock.threads])
    return used


def _tuner(clock: _Clock, **kw) -> ThreadTuner:
    return ThreadTuner([2, 1], set_threads=clock.set, get_threads=clock.get, **kw)


def test_tuner_keeps_the_faster_count_and_probes_the_slower_one_rarely():
    clock = _Clock({2: 0.5, 1: 0.7})  # quiet machine: 2 threads faster
    tuner = _tuner(clock)
    used = _run(tuner, clock, 2200)
    assert tuner.current == 2 and clock.threads == 2
    # trials of 1 thread are cut short (0.7 < 1.5 × 0.5 runs the whole window of 12 + 1 untimed iteration)
    assert used.count(1) <= 13 * len(tuner.history), (used.count(1), len(tuner.history))
    # rounds at ~200, then every 400, 800, 800 ... iterations while the choice holds
    assert 3 <= len(tuner.history) <= 5, tuner.history
    assert [h["choice"] for h in tuner.history] == [2] * len(tuner.history)


def test_tuner_cuts_a_clearly_slower_trial_short():
    clock = _Clock({2: 0.5, 1: 1.0})
    tuner = _tuner(clock)
    used = _run(tuner, clock, 100)
    assert tuner.current == 2
    assert used.count(1) == 5, used  # 1 untimed + 4 timed iterations, then back to 2


def test_tuner_switches_when_another_job_starts_and_back_when_it_ends():
    clock = _Clock({2: 0.5, 1: 0.7})
    tuner = _tuner(clock)
    _run(tuner, clock, 300)
    assert tuner.current == 2
    clock.speeds = {2: 2.0, 1: 0.75}  # a CPU-bound job starts: 2 spinning threads collapse
    used = _run(tuner, clock, 60)
    first_one = used.index(1)
    assert first_one <= 2 * 12, used  # the slowdown is seen within a window or two (no periodic wait)
    assert tuner.current == 1 and used[-20:] == [1] * 20, used
    clock.speeds = {2: 0.5, 1: 0.7}  # the job ends
    used = _run(tuner, clock, 1000)
    assert tuner.current == 2 and used[-100:] == [2] * 100
    assert used.index(2) <= 230, used.index(2)  # the next periodic round after the switch finds it


def test_tuner_holds_its_choice_when_the_difference_is_small():
    clock = _Clock({2: 0.5, 1: 0.49})  # 1 thread 2% faster: within the 5% margin, no switch
    tuner = _tuner(clock)
    _run(tuner, clock, 400)
    assert tuner.current == 2 and clock.calls.count(2) == clock.calls.count(1)


def test_tuner_rejects_bad_candidates():
    with pytest.raises(ValueError, match="at least one"):
        ThreadTuner([], set_threads=lambda n: None, get_threads=lambda: 1)
    with pytest.raises(ValueError, match="≥ 1"):
        ThreadTuner([2, 0], set_threads=lambda n: None, get_threads=lambda: 2)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 allowed cores"
)
def test_train_py_tunes_its_threads_while_training(tmp_path):
    """train.py on the CPU without OMP_NUM_THREADS: the trainer's loop runs the tuner, which really changes
    torch's thread count in the training process (log rows at 2 and at 1 thread) and logs its choice; with
    ``train.cpu_threads: 2`` every row is at 2 threads."""
    from rsn_fast.engine.run_log import read_jsonl
    from tests.engine.runs import env, make_tiny, ok, train_cmd

    cfg = make_tiny(str(tmp_path), max_iters=40, checkpoint_interval=40)
    two = set(sorted(os.sched_getaffinity(0))[:2])
    e = env()
    e.pop("OMP_NUM_THREADS")
    runs = {}
    for name, extra in (("auto", ()), ("fixed", ("--opt", "train.cpu_threads=2"))):
        run = str(tmp_path / name)
        p = subprocess.run(
            train_cmd(cfg, run, *extra),
            env=e,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=lambda: os.sched_setaffinity(0, two),
        )
        ok(p)
        runs[name] = (
            p.stdout,
            [r["cpu_threads"] for r in read_jsonl(os.path.join(run, "log.jsonl")) if "loss" in r],
        )
    out, threads = runs["auto"]
    assert "CPU threads: 2 (cores in this process's affinity), tuned among 2, 1" in out, out
    assert "CPU threads: " in out and "(median iteration per thread count: 2: " in out, out
    assert threads[0] == 2 and 1 in threads, threads
    out, threads = runs["fixed"]
    assert "CPU threads: 2 (train.cpu_threads)" in out and "median iteration" not in out, out
    assert threads == [2] * 40, threads


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_bad_cpu_threads_setting_is_named(value):
    import tempfile

    from rsn_fast.config import ConfigError, load_config
    from tests.engine.runs import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_tiny(tmp)
        with pytest.raises(ConfigError, match=r"train\.cpu_threads.*" + value.lstrip("-")):
            load_config(cfg, [f"train.cpu_threads={value}"])
