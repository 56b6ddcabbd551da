"""The whole RSN training step (forward, RSNLoss, backward, Adam) and the eval forward, per provider.

``python -m benchmarks.bench_train_step [--models rsn18 rsn50] [--batches 32 48] [--quick] [--device cuda]``

Providers (one run compares them all):

* ``eager``: the plain model, NCHW, fp32 (MMPose's setting).
* ``cl_amp``: the plain model, channels-last + autocast (fp16 with GradScaler on CUDA, bf16 on CPU).
* ``compile``: ``torch.compile`` of the plain model, channels-last + autocast.
* ``fused_triton`` / ``fused_cuda``: ``model.fused=triton`` / ``cuda`` (build_model), channels-last + autocast;
  in eval the fused RSBs fold BN. ``fused_reference`` (the ops' pure-torch reference) is accepted by name for
  CPU smoke runs.

Inputs are random images and targets of the real shapes (no data loading). Train rows: median step time, images/s
and peak memory; eval rows: the forward of a batch under ``no_grad``, persons/s. CSV rows under
benchmarks/results/<gpu>/train_step.csv. On the CPU the default is a smoke run (RSN-18, batch 2, 64x64, eager and
fused_reference, one timed call): it checks that the benchmark runs, its numbers say nothing about GPUs.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time

import torch

from benchmarks.common import RESULTS, environment, gpu_name, pick, synchronize, time_ms

PROVIDERS = ["eager", "cl_amp", "compile", "fused_triton", "fused_cuda"]
MODELS = {"rsn18": "configs/rsn18_coco_256x192.yaml", "rsn50": "configs/rsn50_coco_256x192.yaml"}
FIELDS = ["op", "model", "provider", "mode", "batch", "shape", "dtype", "ms", "items/s", "peak MB",
          "GPU", "torch", "triton", "CUDA", "git sha", "date"]  # fmt: skip


def _setup(cfg, provider: str, batch: int, device: torch.device):
    from rsn_fast.config import load_config
    from rsn_fast.models import build_model

    fused = provider.removeprefix("fused_") if provider.startswith("fused_") else "off"
    cfg = load_config(cfg, [f"model.fused={fused}"])
    model = build_model(cfg, device=device).to(device)
    cl = provider != "eager"
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if cl else None
    if cl:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if provider == "compile" else model
    w, h = cfg.model.input_size
    img = torch.randn(batch, 3, h, w, device=device)
    if cl:
        img = img.contiguous(memory_format=torch.channels_last)
    return cfg, model, net, img, amp_dtype


def make_train_step(cfg, provider: str, batch: int, device: torch.device):
    from rsn_fast.engine.optim import build_optimizer
    from rsn_fast.engine.trainer import build_criterion

    cfg, model, net, img, amp_dtype = _setup(cfg, provider, batch, device)
    model.train()
    crit = build_criterion(cfg, model.num_stages)
    opt = build_optimizer(model.parameters(), cfg.train, batch, 1, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    w, h = cfg.model.input_size
    k = cfg.model.num_keypoints
    levels = len(cfg.data.resolved_target_kernels(model.num_stages))
    target = torch.rand(batch, levels, k, h // 4, w // 4, device=device) * 255
    weight = torch.randint(0, 3, (batch, k), device=device).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outs = net(img)
        loss, _ = crit([o.float() for o in outs], target, weight)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step, amp_dtype


def make_eval_forward(cfg, provider: str, batch: int, device: torch.device):
    _, model, net, img, amp_dtype = _setup(cfg, provider, batch, device)
    model.eval()

    @torch.no_grad()
    def fwd() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            net(img)

    return fwd, amp_dtype


def _peak_mb(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else ""


def run_one(
    kind: str, cfg_path: str, name: str, prov: str, batch: int, device: torch.device, args
) -> dict | None:
    make = make_train_step if kind == "train" else make_eval_forward
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        fn, amp_dtype = make(cfg_path, prov, batch, device)
        t0 = time.perf_counter()
        fn()  # first call: compilation / autotuning, reported apart
        synchronize(device)
        first_s = time.perf_counter() - t0
        ms = time_ms(fn, device, warmup=args.warmup, reps=args.reps)
    except Exception as e:  # one provider failing (no compiler, no GPU backend) must not hide the others
        print(f"{name} {kind} {prov}: failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        return None
    items = batch / (ms * 1e-3)
    h, w = args.size
    unit = "img/s" if kind == "train" else "persons/s"
    print(f"{name} {kind} {prov} N={batch}: {ms:.1f} ms, {items:.1f} {unit}, peak {_peak_mb(device) or '-'} MB "
          f"(first call {first_s:.1f} s)", flush=True)  # fmt: skip
    dtype = {None: "fp32", torch.float16: "amp fp16", torch.bfloat16: "amp bf16"}[amp_dtype]
    return {"op": "train_step" if kind == "train" else "eval_forward", "model": name, "provider": prov,
            "mode": "fwd+loss+bwd+adam" if kind == "train" else "eval fwd", "batch": batch,
            "shape": f"{h}x{w}", "dtype": dtype, "ms": f"{ms:.3f}", "items/s": f"{items:.1f}",
            "peak MB": _peak_mb(device)}  # fmt: skip


def _table(rows: list[dict]) -> str:
    base = {(r["op"], r["model"], r["batch"]): float(r["ms"]) for r in rows if r["provider"] == "eager"}
    out = [
        "| op | model | provider | N | dtype | ms | items/s | peak MB | x eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base.get((r["op"], r["model"], r["batch"]))
        sp = f"{b / float(r['ms']):.2f}" if b else ""
        out.append(f"| {r['op']} | {r['model']} | {r['provider']} | {r['batch']} | {r['dtype']} | {r['ms']} | "
                   f"{r['items/s']} | {r['peak MB']} | {sp} |")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_train_step", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS), help="default rsn18 rsn50")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="default 32 48 (GPU), 2 (CPU)")
    p.add_argument(
        "--size", nargs=2, type=int, default=None, metavar=("H", "W"), help="default 256 192 (GPU), 64 64"
    )
    p.add_argument("--providers", default=None, help=f"comma list; default {','.join(PROVIDERS)}")
    p.add_argument("--modes", default="train,eval", help="comma list of train, eval")
    p.add_argument(
        "--quick", action="store_true", help="device suite: RSN-18 batch 48, no compile, few repeats"
    )
    p.add_argument("--no-csv", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.size = tuple(args.size or ((256, 192) if gpu else (64, 64)))
    models = args.models or (["rsn18"] if (args.quick or not gpu) else list(MODELS))
    batches = args.batches or ([48] if args.quick else [32, 48]) if gpu else (args.batches or [2])
    default_providers = [q for q in PROVIDERS if not (args.quick and q == "compile")]
    if not gpu and not args.providers:
        default_providers = ["eager", "fused_reference"]
    providers = pick(args.providers, default_providers)
    args.warmup, args.reps = (3, 10) if (args.quick or not gpu) else (10, 40)
    if not gpu:
        args.warmup, args.reps = 0, 1
    if gpu:
        torch.backends.cudnn.benchmark = True
    print(f"# {gpu_name(device)}: {args.size[0]}x{args.size[1]}, models {models}, batches {batches}")
    rows = []
    for kind in pick(args.modes, ["train", "eval"]):
        for name in models:
            cfg_path = MODELS[name]
            over_size = f"model.input_size=[{args.size[1]},{args.size[0]}]"
            for batch in batches:
                for prov in providers:
                    r = run_one(kind, _with(cfg_path, over_size), name, prov, batch, device, args)
                    if r:
                        rows.append(r)
    print(_table(rows))
    if rows and not args.no_csv:
        env = environment(device)
        slug = "".join(c if c.isalnum() else "_" for c in gpu_name(device)).strip("_").lower()
        path = RESULTS / slug / "train_step.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                wr.writeheader()
            for r in rows:
                wr.writerow({k: {**env, **r}.get(k, "") for k in FIELDS})
        print(f"rows appended to {path}")
    return 0 if rows else 1


def _with(cfg_path: str, override: str):
    """A loaded config with the input-size override (``_setup`` adds ``model.fused``)."""
    from rsn_fast.config import load_config, to_dict

    return to_dict(load_config(cfg_path, [override]))


if __name__ == "__main__":
    sys.exit(main())
