"""CPU thread choice: the process's affinity, OMP_NUM_THREADS when set, passive OpenMP waiting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.engine.runs import REPO, TEST

_PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
os.sched_setaffinity(0, {cpus})
from rsn_fast.engine.threads import configure_cpu_threads, prefer_passive_waiting
prefer_passive_waiting()
import torch
print(configure_cpu_threads(), torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY"))
"""


def _probe(cpus: set[int], **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "PYTHONPATH")}
    e.update(env)
    code = _PROBE.format(repo=REPO, cpus=cpus)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120
    ).stdout


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_threads_follow_affinity_and_honour_the_environment():
    one = {min(os.sched_getaffinity(0))}
    out = _probe(one)
    assert out.split()[-2:] == ["1", "PASSIVE"], (
        out
    )  # one allowed core → one thread, however many the machine has
    out = _probe(one, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")  # wins over the 1-core affinity
    assert "(OMP_NUM_THREADS)" in out and out.split()[-2:] == ["2", "ACTIVE"], out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_test_py_uses_the_same_thread_policy(tmp_path):
    """rsn_fast/test.py (evaluation) chooses its CPU threads like train.py: the affinity's cores, passive
    waiting set before torch is imported, OMP_NUM_THREADS / OMP_WAIT_POLICY kept when set. (The checkpoint is
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
        ({}, "CPU threads: 1 (cores in this process's affinity), wait policy PASSIVE"),
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
