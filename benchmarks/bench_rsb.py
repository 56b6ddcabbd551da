"""Fused RSB vs eager / torch.compile, per distinct RSB shape of RSN-18/50, and the CPU inference goal.

GPU (default): ``python -m benchmarks.bench_rsb [--batch 48] [--providers eager compile triton cuda]``
  every distinct RSB shape of RSN-18 and RSN-50 at 256x192 (both nets use the same seven shapes), batch 48;
  providers ``eager`` (plain block, channels-last, fp16 autocast), ``compile`` (torch.compile of that),
  ``triton`` and ``cuda`` (:class:`rsn_fast.nn.FusedRSB` with that backend, channels-last, autocast);
  modes fwd and fwd+bwd (training mode); median ms over CUDA events and peak memory.
CPU: ``python -m benchmarks.bench_rsb --device cpu [--batch 32] [--rounds 5]``
  eval-mode RSN-18 inference (fp32, 256x192): eager unfused channels-last (the baseline), eager NCHW,
  ``convert(model)`` (folded BN, oneDNN conv with bias, in-place ReLU/sums), and that traced + frozen with
  torch.jit (oneDNN conv+ReLU/add fusion). Providers are interleaved round by round (paired), because other
  jobs share the CPU; the speed-up is the median of the per-round ratios.

Prints a markdown table and appends CSV rows to ``benchmarks/results/<device>/bench_rsb.csv``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import os
import platform
import statistics
import subprocess
import time

import torch

from rsn_fast.models.blocks import ResidualStepsBlock
from rsn_fast.nn import FusedRSB

# (in_ch, out_ch, stride, input H, input W) at 256x192: every distinct RSB of RSN-18 and RSN-50 (spec 5)
RSB_SHAPES = [
    (64, 64, 1, 64, 48),
    (64, 128, 2, 64, 48),
    (128, 128, 1, 32, 24),
    (128, 256, 2, 32, 24),
    (256, 256, 1, 16, 12),
    (256, 512, 2, 16, 12),
    (512, 512, 1, 8, 6),
]


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def _write_csv(device: str, header: list[str], rows: list[list]) -> str:
    out_dir = os.path.join(os.path.dirname(__file__), "results", device)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_rsb.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        wr = csv.writer(f)
        if new:
            wr.writerow(["date", "git", "host", "device", "torch", *header])
        stamp = [datetime.datetime.now().isoformat(timespec="seconds"), _git_sha(), platform.node(), device,
                 torch.__version__]  # fmt: skip
        for r in rows:
            wr.writerow(stamp + list(r))
    return path


# ------------------------------------------------------------------------------------------------ GPU
def _gpu_block(provider: str, cin: int, cout: int, stride: int) -> torch.nn.Module:
    ref = ResidualStepsBlock(cin, cout, stride)
    if provider in ("eager", "compile"):
        m = ref
    else:
        m = FusedRSB(cin, cout, stride, backend=provider)
        m.load_state_dict(ref.state_dict())
    m = m.cuda().to(memory_format=torch.channels_last).train()
    return torch.compile(m) if provider == "compile" else m


def _time_cuda(fn, warmup: int, iters: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_gpu(args) -> None:
    dev = torch.cuda.get_device_name(0).replace(" ", "_")
    rows = []
    for cin, cout, stride, h, w in RSB_SHAPES:
        x0 = torch.randn(args.batch, cin, h, w, device="cuda").contiguous(memory_format=torch.channels_last)
        for provider in args.providers:
            try:
                m = _gpu_block(provider, cin, cout, stride)
            except Exception as e:  # a backend that cannot run here is reported, not fatal
                print(f"skip {provider}: {type(e).__name__}: {e}")
                continue
            for mode in ("fwd", "fwd+bwd"):
                x = x0.clone().requires_grad_(mode != "fwd")

                def step(m=m, x=x, mode=mode):
                    with torch.autocast("cuda", dtype=torch.float16):
                        y = m(x)
                    if mode != "fwd":
                        y.float().sum().backward()

                try:
                    ms, mib = _time_cuda(step, args.warmup, args.iters)
                except Exception as e:
                    print(f"fail {provider} {mode} {cin}->{cout}/s{stride}: {type(e).__name__}: {e}")
                    continue
                rows.append([f"{cin}->{cout} s{stride} {h}x{w}", args.batch, provider, mode, f"{ms:.3f}",
                             f"{mib:.1f}"])  # fmt: skip
                print(f"| {rows[-1][0]} | {provider} | {mode} | {ms:.3f} ms | {mib:.1f} MiB |")
    path = _write_csv(dev, ["shape", "batch", "provider", "mode", "median_ms", "peak_mib"], rows)
    print(f"rows appended to {path}")


# ------------------------------------------------------------------------------------------------ CPU
def _cpu_models(batch: int):
    from rsn_fast.models import build_model
    from rsn_fast.nn import convert

    cfg = os.path.join(os.path.dirname(__file__), "..", "configs", "rsn18_coco_256x192.yaml")
    torch.manual_seed(0)
    eager = build_model(cfg).eval()
    # non-trivial BN statistics, so folding is exercised (fresh models have mean 0 / var 1)
    for mod in eager.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    eager_nchw = copy.deepcopy(eager)
    eager_cl = eager.to(memory_format=torch.channels_last)
    fused = convert(copy.deepcopy(eager_cl))
    x_cl = torch.randn(batch, 3, 256, 192).contiguous(memory_format=torch.channels_last)
    x = x_cl.contiguous()
    models = {"eager_cl": (eager_cl, x_cl), "eager_nchw": (eager_nchw, x), "fused_folded": (fused, x_cl)}
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(copy.deepcopy(fused), x_cl, check_trace=False))
        traced = torch.jit.optimize_for_inference(traced)
    models["fused_folded_jit"] = (traced, x_cl)
    return models


def bench_cpu(args) -> None:
    torch.set_num_threads(args.threads or os.cpu_count())
    models = _cpu_models(args.batch)
    names = [n for n in models if n in args.cpu_providers]
    ref = None
    with torch.inference_mode():
        for name in names:  # warm-up (and a correctness check against the eager model)
            m, x = models[name]
            out = m(x)
            out = out[-1] if isinstance(out, (list, tuple)) else out
            ref = out if ref is None else ref
            err = ((out - ref).norm() / ref.norm()).item()
            print(f"{name}: relative L2 difference to {names[0]} = {err:.2e}")
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.rounds):
            for name in names:
                m, x = models[name]
                t = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t)
    base = names[0]
    rows = []
    print(f"| provider | median s/batch | persons/s | paired speed-up vs {base} |  (batch {args.batch}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds)")  # fmt: skip
    print("|---|---|---|---|")
    for name in names:
        med = statistics.median(times[name])
        ratio = statistics.median(b / t for b, t in zip(times[base], times[name]))
        rows.append(["rsn18 eval 256x192", args.batch, name, "eval-fwd", f"{med * 1e3:.1f}", f"{args.batch / med:.2f}",
                     f"{ratio:.3f}"])  # fmt: skip
        print(f"| {name} | {med:.3f} | {args.batch / med:.2f} | {ratio:.3f}x |")
    path = _write_csv(
        "cpu", ["case", "batch", "provider", "mode", "median_ms", "persons_per_s", "speedup"], rows
    )
    print(f"rows appended to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    ap.add_argument("--batch", type=int, default=None, help="48 on GPU, 32 on CPU")
    ap.add_argument("--providers", nargs="+", default=["eager", "compile", "triton", "cuda"])
    ap.add_argument(
        "--cpu-providers", nargs="+", default=["eager_cl", "eager_nchw", "fused_folded", "fused_folded_jit"]
    )
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="CPU: interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    a = ap.parse_args()
    if a.device == "cpu":
        a.batch = a.batch or 32
        bench_cpu(a)
    else:
        a.batch = a.batch or 48
        bench_gpu(a)


if __name__ == "__main__":
    main()
