"""How many CPU threads torch uses for training and evaluation on the CPU.

Measured on this project's 2-core machine (``benchmarks/results/cpu/bench_demo_threads.md``, the demo's RSN-18):

* with nothing else running, 2 threads that spin while they wait (libgomp's default) are fastest (2.0–2.1 it/s);
  1 thread runs 1.3–1.5 it/s, and 2 threads that sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``) 1.1–1.3;
* beside one other CPU-bound process, 1 thread is fastest (1.3–1.5 it/s); 2 spinning threads fall to 0.5 it/s
  (and to 0.03–0.07 it/s with more jobs on the machine: a spinning thread that waits for a descheduled partner
  burns the time slice its partner needs), 2 sleeping ones to 1.1 it/s.

No fixed setting is best in both cases, and a shared machine changes between them during a run. So:

* ``OMP_NUM_THREADS`` set by the user wins (torch reads it; we leave it alone), then ``train.cpu_threads`` when
  it is a number; both fix the count.
* Otherwise (``train.cpu_threads: auto``) the loop starts with the cores this process may run on (its CPU
  affinity, e.g. a ``taskset`` or a scheduler's cpuset, not the machine's core count) and a
  :class:`ThreadTuner` picks among that count, half of it and 1 from the loop's own iteration times: it measures
  each at the start, keeps the fastest, re-measures after a slowdown of the current choice and now and then
  (every 200–800 iterations), and abandons a trial that is clearly slower after a few iterations.
* The OpenMP wait policy is libgomp's default (spin briefly, then sleep) unless the user set ``OMP_WAIT_POLICY``:
  with the tuner, PASSIVE only costs speed (see above). :func:`prefer_passive_waiting` is kept for callers that
  want it; it must run before torch is imported.

The thread count changes the order of floating-point reductions, so with ``auto`` the last bits of a CPU run
depend on timing; set a number (or ``OMP_NUM_THREADS``) for bitwise-reproducible CPU runs and exact resumes.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Sequence


def cpu_cores() -> int:
    """The number of cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if the user set no policy and torch is not imported yet; returns whether set."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


_TUNE: list[int] | None = None  # candidates chosen by configure_cpu_threads, or None: no tuning


def tuner_candidates(cores: int) -> list[int]:
    """The thread counts a :class:`ThreadTuner` tries for ``cores`` allowed cores: cores, cores // 2, 1."""
    return sorted({cores, max(1, cores // 2), 1}, reverse=True)


def configure_cpu_threads(setting: int | str = "auto") -> str:
    """Choose torch's intra-op thread count for CPU work; returns a one-line description for the log.

    ``setting`` is ``train.cpu_threads``: ``"auto"`` (the affinity's cores, tuned while the loop runs, see
    :func:`make_tuner`) or a fixed count. ``OMP_NUM_THREADS``, when set, wins over both.
    """
    import torch

    global _TUNE
    _TUNE = None
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    if os.environ.get("OMP_NUM_THREADS"):
        return f"CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS), wait policy {policy}"
    if setting != "auto":
        n = int(setting)
        torch.set_num_threads(n)
        return f"CPU threads: {n} (train.cpu_threads), wait policy {policy}"
    n = cpu_cores()
    torch.set_num_threads(n)
    candidates = tuner_candidates(n)
    if len(candidates) == 1:
        return f"CPU threads: {n} (cores in this process's affinity), wait policy {policy}"
    _TUNE = candidates
    listed = ", ".join(map(str, candidates))
    return (
        f"CPU threads: {n} (cores in this process's affinity), tuned among {listed} from the iteration times; "
        f"wait policy {policy}"
    )


def make_tuner() -> ThreadTuner | None:
    """A fresh :class:`ThreadTuner` if :func:`configure_cpu_threads` chose tuning in this process, else None."""
    return ThreadTuner(_TUNE) if _TUNE else None


class ThreadTuner:
    """Chooses torch's CPU thread count while a loop runs, from the loop's own iteration times.

    Call :meth:`step` with the seconds of each iteration (data wait included: the loader's workers share the
    cores). A round measures the current count for ``window`` iterations, then each other candidate; a trial
    whose median is over ``give_up`` × the best so far after 4 iterations is cut short. The fastest is kept
    (the current one unless another is over 5% faster). The next round comes after ``first_interval``
    iterations, doubling up to ``max_interval`` while the choice holds, or at once when a window of the current
    count runs ``slowdown`` × slower than it measured (another job started). The first ``warmup`` iterations
    and the first one after each change are not timed.
    """

    def __init__(
        self,
        candidates: Sequence[int],
        *,
        window: int = 12,
        warmup: int = 5,
        first_interval: int = 200,
        max_interval: int = 800,
        slowdown: float = 1.3,
        give_up: float = 1.5,
        set_threads: Callable[[int], None] | None = None,
        get_threads: Callable[[], int] | None = None,
    ):
        if not candidates:
            raise ValueError("ThreadTuner needs at least one thread count")
        if any(int(c) < 1 for c in candidates):
            raise ValueError(f"thread counts must be ≥ 1, got {list(candidates)}")
        if window < 4:
            raise ValueError(f"window must be ≥ 4 iterations, got {window}")
        if set_threads is None or get_threads is None:
            import torch

            set_threads = set_threads or torch.set_num_threads
            get_threads = get_threads or torch.get_num_threads
        self.candidates = list(dict.fromkeys(int(c) for c in candidates))
        self.window, self.first_interval, self.max_interval = window, first_interval, max_interval
        self.slowdown, self.give_up = slowdown, give_up
        self._set = set_threads
        now = get_threads()
        if now not in self.candidates:
            now = self.candidates[0]
            self._set(now)
        self.current = now  # the chosen count (during a round: the one chosen before it)
        self.active = now  # the count set now
        self.history: list[dict] = []  # one entry per finished round
        self._skip = warmup
        self._interval = first_interval
        self._left = 0
        self._ref = 0.0
        self._watch: list[float] = []
        self._start_round()

    def _apply(self, n: int) -> None:
        if n != self.active:
            self._set(n)
            self.active = n
            self._skip = max(self._skip, 1)

    def _start_round(self) -> None:
        self._queue = [self.current] + [c for c in self.candidates if c != self.current]
        self._times: list[float] = []
        self._results: dict[int, float] = {}
        self._watch = []

    def step(self, seconds: float) -> str | None:
        """Record one iteration; returns a log line after the first round and after a round that changed the count."""
        if self._skip > 0:
            self._skip -= 1
            return None
        if self._queue:
            return self._trial(seconds)
        self._left -= 1
        self._watch.append(seconds)
        if len(self._watch) >= self.window:
            slow = statistics.median(self._watch) > self.slowdown * self._ref
            self._watch = []
            if slow:
                self._interval = self.first_interval
                self._start_round()
                return None
        if self._left <= 0:
            self._start_round()
        return None

    def _trial(self, seconds: float) -> str | None:
        self._times.append(seconds)
        n = self._queue[0]
        med = statistics.median(self._times)
        best = min(self._results.values(), default=None)
        done = len(self._times) >= self.window
        if not done and best is not None and len(self._times) >= 4 and med > self.give_up * best:
            done = True  # clearly slower: stop spending iterations on it
        if not done:
            return None
        self._results[n] = med
        self._queue.pop(0)
        self._times = []
        if self._queue:
            self._apply(self._queue[0])
            return None
        return self._decide()

    def _decide(self) -> str | None:
        before = self.current
        choice = min(self._results, key=self._results.__getitem__)
        if self._results[choice] > 0.95 * self._results[before]:
            choice = before
        self._apply(choice)
        self.current = choice
        self._ref = self._results[choice]
        self._interval = (
            self.first_interval if choice != before else min(2 * self._interval, self.max_interval)
        )
        self._left = self._interval
        self.history.append({"results": dict(self._results), "choice": choice})
        if choice == before and len(self.history) > 1:
            return None
        times = ", ".join(f"{k}: {v:.3f} s" for k, v in sorted(self._results.items(), reverse=True))
        return f"CPU threads: {choice} (median iteration per thread count: {times})"
