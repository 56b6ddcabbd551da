"""Atomic checkpoints: write to a temporary file, fsync, rename over the target, fsync the folder.

A run folder holds ``checkpoints/iter_XXXXXXXX.pth`` (the last K kept) and ``checkpoints/best.pth`` (best AP).
A crash at any moment leaves either the old file or the complete new one, never a partial file under the final
name; a stray ``*.tmp`` from a killed process is ignored and removed on the next save.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from typing import Any

import numpy as np
import torch

_ITER_RE = re.compile(r"^iter_(\d+)\.pth$")
CKPT_DIR = "checkpoints"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on every platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` so that ``path`` is either untouched or complete.

    Raises whatever saving raised, after removing the temporary file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def atomic_link(src: str, dst: str) -> None:
    """Make ``dst`` an atomic copy of ``src`` (a hard link where the filesystem allows, else a copy)."""
    tmp = f"{dst}.{os.getpid()}.tmp"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(dst)))


def iter_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(iteration, path) of the ``iter_*.pth`` checkpoints in ``run_dir``, oldest first."""
    folder = os.path.join(run_dir, CKPT_DIR)
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        m = _ITER_RE.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(out)


def find_latest(run_dir: str) -> str | None:
    """The newest loadable iteration checkpoint of ``run_dir``, or None."""
    for _, path in reversed(iter_checkpoints(run_dir)):
        try:
            torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            return path
        except Exception:  # unreadable (should not happen with atomic writes); fall back to the previous one
            continue
    return None


def save_iter_checkpoint(state: dict, run_dir: str, iteration: int, keep_last: int) -> str:
    """Write ``checkpoints/iter_<iteration>.pth`` atomically and delete all but the newest ``keep_last``."""
    folder = os.path.join(run_dir, CKPT_DIR)
    path = os.path.join(folder, f"iter_{iteration:08d}.pth")
    atomic_save(state, path)
    for name in os.listdir(folder):
        if name.endswith(".tmp") and not name.endswith(f".{os.getpid()}.tmp"):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    ckpts = iter_checkpoints(run_dir)
    for _, old in ckpts[: max(0, len(ckpts) - keep_last)]:
        os.remove(old)
    return path


def best_path(run_dir: str) -> str:
    return os.path.join(run_dir, CKPT_DIR, "best.pth")


# ---------------------------------------------------------------------------------------------------------
# RNG state


def get_rng_state() -> dict:
    """Python, NumPy, torch CPU and (if used) CUDA generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def load_model_weights(model: torch.nn.Module, path: str, strict: bool = True) -> None:
    """Load weights from one of our checkpoints, or any format ``rsn_fast.models.load_checkpoint`` reads."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and ckpt.get("format") == "rsn_fast" and "model" in ckpt:
        unwrap(model).load_state_dict(ckpt["model"], strict=strict)
        return
    from rsn_fast.models import load_checkpoint

    load_checkpoint(unwrap(model), path)
