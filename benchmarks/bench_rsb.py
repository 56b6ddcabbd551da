"""Fused RSB vs eager / torch.compile, per distinct RSB shape of RSN-18/50, and the CPU inference goal.

GPU (default): ``python -m benchmarks.bench_rsb [--quick] [--batch 48] [--providers eager,triton,cuda,compile]``
  every distinct RSB shape of RSN-18 and RSN-50 at 256x192 (both nets use the same seven shapes), batch 48;
  providers ``eager`` (plain block, channels-last, fp16 autocast), ``compile`` (torch.compile of that),
  ``triton`` and ``cuda`` (:class:`rsn_fast.nn.FusedRSB` with that backend, channels-last, autocast);
  modes fwd and fwd+bwd (training mode); median ms over CUDA events and peak memory.
CPU: ``python -m benchmarks.bench_rsb --device cpu [--batch 32] [--rounds 5]``
  eval-mode RSN-18 inference (fp32, 256x192): eager unfused channels-last (the baseline), eager NCHW,
  ``convert(model)`` (folded BN, oneDNN conv with bias, in-place ReLU/sums), and that traced + frozen with
  torch.jit (oneDNN conv+ReLU/add fusion). Providers are interleaved round by round (paired), because other
  jobs share the CPU; the speed-up is the median of the per-round ratios.

GPU rows go through benchmarks/common.py (CSV ``benchmarks/results/<gpu>/rsb.csv`` with the shared columns,
peak memory in ``rsb_memory.csv`` next to it); CPU rows to ``benchmarks/results/cpu/bench_rsb.csv``.
"""

from __future__ import annotations

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


def _peak_mib(fn) -> float:
    """Peak memory (MiB) allocated by one call of fn above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_gpu(args) -> None:
    from benchmarks import common

    dev = torch.device(args.device)
    env = common.environment(dev)
    copy_gbs = common.copy_bandwidth_gbs(dev)
    providers = common.pick(args.providers, ["eager", "triton", "cuda", "compile"])
    providers = [p for p in providers if p != "compile"] + [
        p for p in providers if p == "compile"
    ]  # compile last
    modes = common.pick(args.modes, ["fwd", "fwd+bwd"])
    shapes = [RSB_SHAPES[0], RSB_SHAPES[3]] if args.quick else RSB_SHAPES
    warmup, reps = (3, 10) if args.quick else (5, 30)
    rows = []
    for shape_i, (cin, cout, stride, h, w) in enumerate(shapes):
        x0 = torch.randn(args.batch, cin, h, w, device=dev).contiguous(memory_format=torch.channels_last)
        shape = f"N{args.batch} {cin}->{cout} s{stride} {h}x{w}"
        h_out, w_out = (h - 1) // stride + 1, (w - 1) // stride + 1
        nbytes = 2 * args.batch * (cin * h * w + cout * h_out * w_out)  # fp16 block input + output: a floor
        for provider in providers:
            why = _unusable(provider, dev)
            if why:
                print(f"skip {provider}: {why}")
                continue
            m = _gpu_block(provider, cin, cout, stride)
            for mode in modes:
                if args.quick and provider == "compile" and (mode == "fwd" or shape_i > 0):
                    continue  # device-suite budget: torch.compile (slow to build) for one shape, fwd+bwd
                x = x0.clone().requires_grad_(mode != "fwd")

                def step(m=m, x=x, mode=mode):
                    with torch.autocast("cuda", dtype=torch.float16):
                        y = m(x)
                    if mode != "fwd":
                        y.float().sum().backward()

                try:
                    ms = common.time_ms(step, dev, warmup=warmup, reps=reps)
                    mib = _peak_mib(step)
                except Exception as e:  # reported, not fatal: the other providers still run
                    print(f"fail {provider} {mode} {shape}: {type(e).__name__}: {e}")
                    continue
                rows.append(common.make_row(env, "rsb", provider, mode, shape, "fp16-autocast", ms, nbytes,
                                            copy_gbs))  # fmt: skip
                mem = {"provider": provider, "mode": mode, "shape": shape, "peak_mib": f"{mib:.1f}",
                       "git sha": env["git sha"], "date": env["date"]}  # fmt: skip
                print(f"| {shape} | {provider} | {mode} | {ms:.3f} ms | {mib:.1f} MiB peak |", flush=True)
                if not args.no_csv:  # written as measured: a suite timeout keeps what was done
                    path = common.write_csv(rows[-1:], "rsb", dev)
                    _append_memory(path.with_name("rsb_memory.csv"), mem)
    print(common.markdown_table(rows))


def _append_memory(path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(row))
        if new:
            wr.writeheader()
        wr.writerow(row)


def _unusable(provider: str, dev: torch.device) -> str | None:
    from benchmarks import common

    if provider == "triton":
        return common.triton_usable(dev)
    if provider == "cuda":
        return common.cuda_ext_usable(dev, "rsb_prologue_cuda")
    return None


# ------------------------------------------------------------------------------------------------ CPU
def _cpu_models(batch: int):
    from rsn_fast.models import build_model
    from rsn_fast.nn import compile_for_cpu_inference, convert

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
    # rsn_fast.nn.compile_for_cpu_inference: the folded model compiled by inductor with freezing (compiles at
    # the warm-up call, ~30 s on 2 cores).
    models["fused_folded_inductor"] = (compile_for_cpu_inference(eager_cl), x_cl)
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
    if not args.no_csv:
        path = _write_csv(
            "cpu", ["case", "batch", "provider", "mode", "median_ms", "persons_per_s", "speedup"], rows
        )
        print(f"rows appended to {path}")


def main() -> None:
    from benchmarks import common

    ap = common.base_parser(__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=None, help="48 on GPU, 32 on CPU")
    ap.add_argument(
        "--cpu-providers",
        nargs="+",
        default=["eager_cl", "eager_nchw", "fused_folded", "fused_folded_jit", "fused_folded_inductor"],
    )
    ap.add_argument("--rounds", type=int, default=5, help="CPU: interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    a = ap.parse_args()
    if torch.device(a.device).type == "cpu":
        a.batch = a.batch or 32
        bench_cpu(a)
    else:
        a.batch = a.batch or 48
        bench_gpu(a)


if __name__ == "__main__":
    main()
