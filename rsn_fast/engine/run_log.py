"""Run logging on rank 0: a JSON-lines file, TensorBoard scalars, a tqdm progress bar, and text messages."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any


class RunLogger:
    """Writes ``<run_dir>/log.jsonl`` (one JSON object per record) and TensorBoard scalars under ``<run_dir>/tb``.

    On ranks other than 0 every method is a no-op, so callers need not check the rank.

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0.
        tensorboard: write TensorBoard event files.
        total: number of iterations, for the progress bar; ``start`` is where it starts (resume).
        progress: show the tqdm bar (on stderr).
        purge_step: on resume, the first iteration that will be logged again (checkpoint iteration + 1):
            TensorBoard drops the earlier attempt's scalars from this step on, so replayed iterations are not
            shown twice. :func:`continue_log` does the same for log.jsonl.
    """

    def __init__(
        self,
        run_dir: str,
        enabled: bool = True,
        tensorboard: bool = True,
        total: int = 0,
        start: int = 0,
        progress: bool = True,
        purge_step: int | None = None,
    ):
        self.enabled = enabled
        self.run_dir = run_dir
        self._tb = None
        self._bar = None
        self._file = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._file = open(os.path.join(run_dir, "log.jsonl"), "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=purge_step)
            except Exception as e:  # TensorBoard is optional at run time
                self.info(f"TensorBoard disabled: {e}")
        if progress and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=start,
                desc="train",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=1.0,
                unit="it",
            )

    def info(self, msg: str) -> None:
        """A text line on stdout (kept clear of the progress bar) and in the JSON log."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg, file=sys.stdout)
        else:
            print(msg, flush=True)
        self.record({"msg": msg})

    def record(self, row: dict[str, Any]) -> None:
        """Append one JSON object (with a wall-clock time) to log.jsonl."""
        if not self.enabled or self._file is None:
            return
        row = {"time": round(time.time(), 3), **row}
        self._file.write(json.dumps(row, default=_jsonable) + "\n")

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        """TensorBoard scalars ``<prefix><name>`` at ``step`` (non-finite values are skipped)."""
        if not self.enabled or self._tb is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(f"{prefix}{k}", v, step)

    def progress(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def _jsonable(x: Any) -> Any:
    try:
        return float(x)
    except Exception:
        return str(x)


def _row_iteration(row: dict) -> int:
    """The iteration a log.jsonl row belongs to (-1 for rows without one, e.g. messages)."""
    for key in ("iter", "eval_iter"):
        if isinstance(row.get(key), (int, float)):
            return int(row[key])
    return -1


def continue_log(run_dir: str, iteration: int) -> int:
    """Make ``<run_dir>/log.jsonl`` end at ``iteration`` before a run continues from that iteration.

    Everything from the first row of a later iteration on (an interrupted attempt's rows after its last
    checkpoint, which the resumed run logs again) moves to ``log.replaced.jsonl`` (appended, so nothing is
    lost); the rewrite is atomic. A torn last line (a process killed mid-write) moves there too. Returns the
    number of rows moved.
    """
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    cut = len(lines)
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            cut = i
            break
        if _row_iteration(row) > iteration:
            cut = i
            break
    moved = [ln if ln.endswith("\n") else ln + "\n" for ln in lines[cut:] if ln.strip()]
    if not moved:
        return 0
    with open(os.path.join(run_dir, "log.replaced.jsonl"), "a") as f:
        f.writelines(moved)
        f.flush()
        os.fsync(f.fileno())
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.writelines(lines[:cut])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(moved)


def read_jsonl(path: str) -> list[dict]:
    """All records of a log.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(path: str) -> dict[int, float]:
    """iteration → logged total loss from a log.jsonl (the last record wins, so a resumed run overrides)."""
    out: dict[int, float] = {}
    for row in read_jsonl(path):
        if "iter" in row and "loss" in row:
            out[int(row["iter"])] = float(row["loss"])
    return out


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
