"""Training-step throughput (images/s) of a config: forward, RSNLoss, backward and the optimizer step.

``python -m benchmarks.bench_train_step --config configs/rsn18_coco_256x192.yaml [--batch 32] [--quick]``

Providers: ``eager`` (fp32, contiguous), ``cl_amp`` (channels_last + autocast: bf16 on CPU, fp16 with
GradScaler on CUDA), ``compile`` (torch.compile of the model, fp32). Inputs are random images and random
targets of the right shapes (no data loading). Median step time over many steps; a markdown table and CSV rows
(op ``train_step``, column ``GB/s`` holds images/s here) under benchmarks/results/<gpu>/.
"""

from __future__ import annotations

import sys
import time

import torch

from benchmarks.common import base_parser, environment, markdown_table, pick, synchronize, time_ms, write_csv

PROVIDERS = ["eager", "cl_amp", "compile"]


def make_step(cfg, provider: str, batch: int, device: torch.device):
    from rsn_fast.engine.optim import build_optimizer
    from rsn_fast.engine.trainer import build_criterion
    from rsn_fast.models import build_model

    model = build_model(cfg).to(device).train()
    cl = provider == "cl_amp"
    amp_dtype = None
    if cl:
        model = model.to(memory_format=torch.channels_last)
        amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    net = torch.compile(model) if provider == "compile" else model
    crit = build_criterion(cfg, model.num_stages)
    opt = build_optimizer(model.parameters(), cfg.train, batch, 1, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    w, h = cfg.model.input_size
    k = cfg.model.num_keypoints
    levels = len(cfg.data.resolved_target_kernels(model.num_stages))
    img = torch.randn(batch, 3, h, w, device=device)
    if cl:
        img = img.contiguous(memory_format=torch.channels_last)
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

    return step


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/rsn18_coco_256x192.yaml")
    p.add_argument("--batch", type=int, default=None, help="default: 32 on GPU, 2 on CPU")
    p.add_argument("--input-size", default=None, help="W,H override (e.g. 96,128 for a quick CPU run)")
    args = p.parse_args(argv)
    from rsn_fast.config import load_config

    device = torch.device(args.device)
    over = []
    if args.input_size:
        over.append(f"model.input_size=[{args.input_size}]")
    cfg = load_config(args.config, over)
    batch = args.batch or (32 if device.type == "cuda" else 2)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    env = environment(device)
    rows = []
    warmup, reps = (2, 5) if (args.quick or device.type == "cpu") else (10, 50)
    for prov in pick(args.providers, PROVIDERS):
        try:
            step = make_step(cfg, prov, batch, device)
            t0 = time.perf_counter()
            step()  # first call: compilation / autotuning, reported apart
            synchronize(device)
            first_s = time.perf_counter() - t0
            ms = time_ms(step, device, warmup=warmup, reps=reps)
        except Exception as e:  # one provider failing (e.g. no compiler) must not hide the others
            print(f"{prov}: failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        ips = batch / (ms * 1e-3)
        w, h = cfg.model.input_size
        rows.append({"op": "train_step", "provider": prov, "mode": "fwd+bwd+step",
                     "shape": f"{cfg.name} N={batch} {h}x{w}", "dtype": "amp" if prov == "cl_amp" else "fp32",
                     "ms": f"{ms:.3f}", "GB/s": f"{ips:.1f}", "pct_copy": "", **env})  # fmt: skip
        print(f"{prov}: {ms:.1f} ms/step, {ips:.1f} img/s (first step {first_s:.1f} s)", flush=True)
    print(markdown_table(rows).replace("GB/s", "img/s"))
    if rows and not args.no_csv:
        print(f"rows appended to {write_csv(rows, 'train_step', device)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
