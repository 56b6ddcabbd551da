"""Checkpoint files: atomic, verified writes; reads that name the file and the reason; retention; resume choice.

A run folder holds ``checkpoints/iter_XXXXXXXX.pth`` (the last K kept) and ``checkpoints/best.pth`` (best AP).
Writes go to a temporary file (fsync), are verified, then renamed over the target (and the folder fsynced), so a
crash at any moment leaves either the old file or the complete new one under the final name; a stray ``*.tmp``
from a killed process is ignored and removed on the next save.

Verification: ``torch.save`` writes a zip archive with a CRC-32 per record. :func:`verify_file` reads every record
and checks its CRC (``zipfile.testzip``), so a torn, truncated or bit-flipped file is caught before it is renamed
into place and again on every read (``torch.load`` alone loads a bit-flipped file without complaint, and reports
a truncated one as a miniz "central directory" error without the file name).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from rsn_fast.models.checkpoint import CheckpointError, state_dict_problems

_ITER_RE = re.compile(r"^iter_(\d+)\.pth$")
CKPT_DIR = "checkpoints"
FORMAT = "rsn_fast"


class CheckpointReadError(CheckpointError):
    """A checkpoint file that cannot be used; ``reason`` is one of the short reasons below, ``path`` the file.

    Reasons: "missing", "empty", "truncated", "corrupt" (a record fails its CRC), "not a checkpoint",
    "another architecture".
    """

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


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


def verify_file(path: str) -> None:
    """Check that ``path`` is a complete, undamaged ``torch.save`` file; raise CheckpointReadError otherwise.

    Zip-format files (every torch.save since 1.6) have each record's CRC checked. Legacy (pickle) files cannot
    be checked here; :func:`read_checkpoint` reports them if ``torch.load`` fails.
    """
    if not os.path.isfile(path):
        raise CheckpointReadError(path, "missing", "no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointReadError(path, "empty", "0 bytes")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return  # not a zip: a legacy torch file or not a checkpoint at all; torch.load decides
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        raise CheckpointReadError(
            path, "truncated", f"{size} bytes, the zip archive's end record is missing"
        ) from None
    except (OSError, EOFError, zipfile.LargeZipFile, ValueError) as e:
        raise CheckpointReadError(path, "truncated", f"{size} bytes: {e}") from None
    if bad is not None:
        raise CheckpointReadError(path, "corrupt", f"record {bad!r} fails its CRC check")


def load_file(path: str) -> Any:
    """``torch.load`` of a verified file (CPU), errors naming the file and the reason."""
    verify_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - every failure here means "not a readable torch file"
        raise CheckpointReadError(
            path, "not a checkpoint", f"torch.load: {str(e).splitlines()[0][:200]}"
        ) from None


def read_checkpoint(path: str) -> dict:
    """One of our training checkpoints (``format: rsn_fast``), verified; CheckpointReadError otherwise."""
    state = load_file(path)
    if not (isinstance(state, dict) and state.get("format") == FORMAT and "model" in state):
        keys = list(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointReadError(
            path, "not a checkpoint", f"not an rsn_fast training checkpoint; holds {keys}"
        )
    return state


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` so that ``path`` is either untouched or complete and verified.

    Raises whatever saving raised (or CheckpointReadError if the written file fails verification), after
    removing the temporary file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        verify_file(tmp)  # a torn write (full disk, NFS hiccup) is caught now, not at resume time
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        interrupt = _interrupt_in_chain(e)
        if interrupt is not None and interrupt is not e:
            raise interrupt from None
        raise
    _fsync_dir(folder)


def _interrupt_in_chain(exc: BaseException) -> BaseException | None:
    """The interrupt (a BaseException that is not an Exception: KeyboardInterrupt, a second stop signal) behind
    ``exc``, if any. A signal handler that raises while torch.save is inside its C++ zip writer comes back as
    the writer's own RuntimeError ("unexpected pos"), with the interrupt only as its context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if not isinstance(exc, Exception):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


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


def find_resumable(run_dir: str) -> tuple[str | None, list[CheckpointReadError]]:
    """The newest readable iteration checkpoint of ``run_dir`` and the unreadable newer ones skipped.

    Returns (None, []) when the folder has no iteration checkpoint.

    Raises:
        CheckpointError: checkpoints exist but none is readable (each is named with its reason).
    """
    skipped: list[CheckpointReadError] = []
    found = iter_checkpoints(run_dir)
    for _, path in reversed(found):
        try:
            read_checkpoint(path)
        except CheckpointReadError as e:
            skipped.append(e)
            continue
        return path, skipped
    if found:
        lines = "\n  ".join(str(e) for e in skipped)
        raise CheckpointError(
            f"none of the {len(found)} checkpoints in {os.path.join(run_dir, CKPT_DIR)} is readable:\n  {lines}\n"
            "Not starting over on top of them: resume from a good file with --resume PATH, or start a new "
            "run with --overwrite (moves the folder aside)"
        )
    return None, []


def find_latest(run_dir: str) -> str | None:
    """The newest readable iteration checkpoint of ``run_dir`` (unreadable ones skipped with a warning), or None."""
    try:
        path, skipped = find_resumable(run_dir)
    except CheckpointError as e:
        warnings.warn(str(e), stacklevel=2)
        return None
    for e in skipped:
        warnings.warn(f"skipping unreadable checkpoint {e}", stacklevel=2)
    return path


def prune_checkpoints(run_dir: str, keep_last: int, this_run: Iterable[int] = ()) -> list[str]:
    """Delete all but ``keep_last`` iteration checkpoints; returns the deleted paths.

    Order of value: checkpoints written by the current run (``this_run``, its iterations) rank above every
    other file, newest iteration first; the others (a previous run's, or the future of a run resumed from an
    older checkpoint) rank by iteration below them. So the current run's newest checkpoint is never deleted,
    however high the iteration numbers of files left by an earlier run.
    """
    mine = set(this_run)
    ranked = sorted(iter_checkpoints(run_dir), key=lambda ip: (ip[0] in mine, ip[0]), reverse=True)
    deleted = []
    for _, path in ranked[max(1, keep_last) :]:
        try:
            os.remove(path)
            deleted.append(path)
        except FileNotFoundError:
            pass
    return deleted


def save_iter_checkpoint(
    state: dict, run_dir: str, iteration: int, keep_last: int, this_run: Iterable[int] | None = None
) -> str:
    """Write ``checkpoints/iter_<iteration>.pth`` atomically, then keep the ``keep_last`` best-ranked ones.

    ``this_run``: iterations checkpointed by the current run so far (see :func:`prune_checkpoints`);
    ``iteration`` is added to it. None ranks every file by iteration alone.
    """
    folder = os.path.join(run_dir, CKPT_DIR)
    path = os.path.join(folder, f"iter_{iteration:08d}.pth")
    atomic_save(state, path)
    for name in os.listdir(folder):
        if name.endswith(".tmp") and not name.endswith(f".{os.getpid()}.tmp"):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    mine = [i for i, _ in iter_checkpoints(run_dir)] if this_run is None else [*this_run, iteration]
    prune_checkpoints(run_dir, keep_last, mine)
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


def _model_config_diff(saved: dict | None, cfg: Any) -> str:
    """``model.<key>: checkpoint X, this config Y`` for each model key that differs (empty if unknown)."""
    if not isinstance(saved, dict) or cfg is None:
        return ""
    from rsn_fast.config import to_dict

    here = to_dict(cfg).get("model", {})
    theirs = saved.get("model", {})
    diffs = [
        f"model.{k}: checkpoint {theirs.get(k)!r}, this config {here.get(k)!r}"
        for k in sorted(set(here) | set(theirs))
        if theirs.get(k) != here.get(k)
    ]
    name = saved.get("name")
    head = f"trained with config {name!r}" if name else "trained with another config"
    return head + (": " + "; ".join(diffs) if diffs else "")


def check_fits(model: torch.nn.Module, state: dict, path: str, cfg: Any = None, strict: bool = True) -> None:
    """Raise CheckpointReadError("another architecture") when ``state['model']`` does not fit ``model``.

    The message has a short key/shape diff and, from the config stored in the checkpoint, which model keys
    differ from ``cfg`` (the config of this run).
    """
    problems = state_dict_problems(unwrap(model).state_dict(), state["model"], strict=strict, limit=4)
    if problems:
        trained = _model_config_diff(state.get("config"), cfg)
        lines = ([trained] if trained else []) + problems
        raise CheckpointReadError(path, "another architecture", "\n  " + "\n  ".join(lines))


def load_model_weights(model: torch.nn.Module, path: str, strict: bool = True, cfg: Any = None) -> None:
    """Load weights from one of our checkpoints, or any format ``rsn_fast.models.load_checkpoint`` reads.

    Raises:
        CheckpointReadError: the file is missing, empty, truncated, corrupt, not a checkpoint, or of another
            architecture (with a short diff; ``cfg`` is this run's config, compared with the stored one).
    """
    obj = load_file(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT and "model" in obj:
        check_fits(model, obj, path, cfg, strict=strict)
        unwrap(model).load_state_dict(obj["model"], strict=strict)
        return
    from rsn_fast.models import load_checkpoint

    try:
        load_checkpoint(unwrap(model), path, strict=strict)
    except CheckpointError as e:
        if isinstance(e, CheckpointReadError):
            raise
        detail = str(e).split("\n", 1)[-1]
        reason = "another architecture" if "does not fit" in str(e) else "not a checkpoint"
        raise CheckpointReadError(path, reason, "\n" + detail) from None
