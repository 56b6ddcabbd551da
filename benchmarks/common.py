"""Shared benchmark harness: timing (median of many runs with device events), copy bandwidth, environment,
CSV rows under benchmarks/results/<gpu>/<op>.csv, and a markdown table. Later benchmarks reuse it.

CSV columns: op, provider, mode, shape, dtype, ms, GB/s, pct_copy, GPU, torch, triton, CUDA, git sha, date.
GB/s counts the fewest bytes the op must move (each input read once, each output written once);
pct_copy is that rate over the device-to-device copy bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIELDS = ["op", "provider", "mode", "shape", "dtype", "ms", "GB/s", "pct_copy", "GPU", "torch", "triton", "CUDA",
          "git sha", "date"]  # fmt: skip
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="main shape only, fewer repeats (device suite)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16")
    p.add_argument("--providers", default=None, help="comma list; default all")
    p.add_argument("--modes", default=None, help="comma list of the modes; default all")
    p.add_argument("--no-csv", action="store_true", help="print only, write no CSV")
    return p


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: torch.device | str, warmup: int = 5, reps: int = 30) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` runs after ``warmup`` runs (CUDA events on a GPU)."""
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(dev)
    times = []
    if dev.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbs(device: torch.device | str, nbytes: int | None = None) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
    dev = torch.device(device)
    nbytes = nbytes or (1 << 30 if dev.type == "cuda" else 1 << 26)
    src = torch.randn(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), dev, warmup=3, reps=20)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def gpu_name(device: torch.device | str) -> str:
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def environment(device: torch.device | str) -> dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "GPU": gpu_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "CUDA": torch.version.cuda or "none",
        "git sha": _git_sha(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def make_row(env: dict, op: str, provider: str, mode: str, shape: str, dtype: str, ms: float, nbytes: int,
             copy_gbs: float) -> dict:  # fmt: skip
    gbs = nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")
    return {"op": op, "provider": provider, "mode": mode, "shape": shape, "dtype": dtype, "ms": f"{ms:.4f}",
            "GB/s": f"{gbs:.1f}", "pct_copy": f"{100 * gbs / copy_gbs:.1f}", **env}  # fmt: skip


def write_csv(rows: list[dict], op: str, device: torch.device | str) -> Path:
    """Append rows to benchmarks/results/<gpu>/<op>.csv (header written once). Returns the path."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", gpu_name(device)).strip("_").lower()
    path = RESULTS / slug / f"{op}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    return path


def markdown_table(rows: list[dict], speedup_vs: str | None = "eager") -> str:
    """One line per row; `x eager` is the speed-up over the eager row of the same op/mode/shape/dtype."""
    base = {}
    for r in rows:
        if r["provider"] == speedup_vs:
            base[(r["op"], r["mode"], r["shape"], r["dtype"])] = float(r["ms"])
    head = "| op | provider | mode | shape | dtype | ms | GB/s | % copy | x eager |\n|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        b = base.get((r["op"], r["mode"], r["shape"], r["dtype"]))
        sp = f"{b / float(r['ms']):.2f}" if b and float(r["ms"]) > 0 else ""
        lines.append(f"| {r['op']} | {r['provider']} | {r['mode']} | {r['shape']} | {r['dtype']} | {r['ms']} | "
                     f"{r['GB/s']} | {r['pct_copy']} | {sp} |")  # fmt: skip
    return "\n".join(lines)


def pick(arg: str | None, default: list[str]) -> list[str]:
    return default if not arg else [s.strip() for s in arg.split(",") if s.strip()]


def triton_usable(device: torch.device | str) -> str | None:
    """None when Triton kernels can run on ``device``, else the reason."""
    dev = torch.device(device)
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None if dev.type == "cpu" else "TRITON_INTERPRET=1 runs on CPU tensors only"
    if dev.type != "cuda":
        return "Triton needs a CUDA GPU (or TRITON_INTERPRET=1)"
    if torch.cuda.get_device_capability(dev)[0] < 8:
        return "Triton needs compute capability >= 8.0"
    return None


def cuda_ext_usable(device: torch.device | str, op_name: str) -> str | None:
    from rsn_fast.ops._dispatch import cuda_reasons

    dev = torch.device(device)
    if dev.type != "cuda":
        return "the CUDA backend needs a CUDA device"
    why = cuda_reasons([torch.empty(1, device=dev)], op_name)
    return "; ".join(why) if why else None
