"""How many CPU threads torch uses for training on the CPU.

Seen on this project's 2-core machine: with torch's default (one OpenMP thread per core, threads that spin while
they wait at each op's barrier) and one other CPU-bound process running, the demo fell from ~1.8 it/s to one
iteration per 15-18 s: a spinning thread that waits for a descheduled partner burns the time slice its partner
needs. So:

* ``OMP_NUM_THREADS`` set by the user wins (torch reads it; we leave it alone).
* Otherwise the count is the cores this process may run on (its CPU affinity, e.g. a ``taskset`` or a cgroup
  cpuset from a scheduler), not the machine's core count.
* Waiting threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user set a policy; this has
  to be in the environment before torch is imported, so entry points call :func:`prefer_passive_waiting` first.
"""

from __future__ import annotations

import os
import sys


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


def configure_cpu_threads() -> str:
    """Choose torch's intra-op thread count for CPU work; returns a one-line description for the log."""
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    if os.environ.get("OMP_NUM_THREADS"):
        return f"CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS), wait policy {policy}"
    n = cpu_cores()
    torch.set_num_threads(n)
    return f"CPU threads: {n} (cores in this process's affinity), wait policy {policy}"
