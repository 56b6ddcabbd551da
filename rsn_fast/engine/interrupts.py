"""SIGINT / SIGTERM during training: finish the iteration, checkpoint, exit 130 / 143; a second signal exits now.

A cluster scheduler sends SIGTERM some time before it kills a job, and Ctrl-C sends SIGINT to every process of
the terminal's process group (torchrun's agent and each worker). The first signal only sets a flag; the trainer
reads it once per iteration, all ranks agree on it through one all-reduce (so every rank stops after the same
iteration and rank 0 writes one checkpoint), and :class:`TrainingInterrupted` carries the exit code out.
A second signal raises :class:`ImmediateExit` at once: checkpoints are written to a temporary file and renamed,
so leaving in the middle of a write loses only that write.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int) -> int:
    """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after a complete iteration; the checkpoint ``path`` holds it."""

    def __init__(self, signum: int, iteration: int, path: str | None):
        self.signum = signum
        self.iteration = iteration
        self.path = path
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped after iteration {iteration}, checkpoint {path}")


class ImmediateExit(BaseException):
    """A second stop signal: leave now (a BaseException, so ``except Exception`` blocks let it through)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} again: exiting at once")


class StopRequest:
    """Installs SIGINT/SIGTERM handlers while active (``with StopRequest() as stop:``); main thread only.

    ``stop.signum`` is the first signal received (None before). Outside the main thread (where Python cannot
    install handlers) it does nothing and the default behaviour stays.
    """

    def __init__(self, message: str = "stopping after this iteration and writing a checkpoint"):
        self.message = message
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            # os.write, not print: a handler that prints while the main thread is inside print() to the same
            # stream raises "reentrant call".
            note = (
                f"\n{signal.Signals(signum).name} received: {self.message} (send it again to quit at once)\n"
            )
            os.write(2, note.encode())
            return
        raise ImmediateExit(signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)  # type: ignore[arg-type]
        self._old.clear()

    def agreed(self, distributed: bool) -> int | None:
        """The stop signal every rank agrees on (the largest number any rank received), or None; collective."""
        mine = int(self.signum or 0)
        if distributed:
            t = torch.tensor([mine], dtype=torch.int64)
            if torch.distributed.get_backend() == "nccl":
                t = t.cuda()
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            mine = int(t.item())
        return mine or None


def ignore_stop_signals_in_worker(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave stopping to the main process.

    A worker that gets Ctrl-C ends its loop (KeyboardInterrupt) and one killed by SIGTERM makes the main
    process raise "DataLoader worker exited unexpectedly"; either would break the iteration being finished.
    The main process shuts the workers down itself, and they watch it and exit if it dies.
    """
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
