"""Helpers for the subprocess tests of train.py / test.py: a tiny synthetic set and config, and runners."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "rsn_fast", "train.py")
TEST = os.path.join(REPO, "rsn_fast", "test.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def make_tiny(root: str, max_iters: int = 6, checkpoint_interval: int = 2, tensorboard: bool = False) -> str:
    """A 24-image synthetic set and a tiny RSN-18 (32×32) config under ``root``; returns the config path."""
    data = os.path.join(root, "syn")
    if not os.path.isdir(data):
        from rsn_fast.data.synthetic import generate

        generate(data, num_train=24, num_val=7, seed=1)
    cfg = os.path.join(root, f"tiny_{max_iters}_{checkpoint_interval}_{int(tensorboard)}.yaml")
    with open(cfg, "w") as f:
        f.write(
            f"""
name: tiny
model: {{input_size: [32, 32]}}
data:
  root: {data}
  train_ann: annotations/person_keypoints_train.json
  val_ann: annotations/person_keypoints_val.json
  train_img_dir: images
  val_img_dir: images
  dets_file: detections_val.json
  workers: 0
  batch_size: 2
train: {{max_iters: {max_iters}, checkpoint_interval: {checkpoint_interval}, keep_last: 2, log_interval: 1,
         eval_at_end: false, tensorboard: {str(tensorboard).lower()}}}
test: {{batch_size: 4}}
"""
        )
    return cfg


def env(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RSN_FAST_TEST_")}
    e.pop("PYTHONPATH", None)  # the entry points must find the package on their own when run as files
    e.update(OMP_NUM_THREADS="1", **extra)
    return e


def train_cmd(cfg: str, run_dir: str, *extra: str, nproc: int = 1) -> list[str]:
    head = [sys.executable, TRAIN] if nproc == 1 else [*TORCHRUN, "--nproc_per_node", str(nproc), TRAIN]
    return [*head, "--config", cfg, "--work-dir", run_dir, "--no-progress", *extra]


def train(cfg: str, run_dir: str, *extra: str, env_: dict | None = None, timeout: float = 240):
    return subprocess.run(
        train_cmd(cfg, run_dir, *extra),
        env=env_ or env(),
        cwd=os.path.dirname(run_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, (
        f"exit code {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}"
    )


def snapshot(folder: str) -> dict[str, str]:
    """relative path → sha256 of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def truncate(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
