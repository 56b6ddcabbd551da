"""Fused PRM spatial gate benchmark: eager PyTorch (the reference composition: depthwise 9×9, BatchNorm2d,
ReLU, 1×1 conv C→1, BatchNorm2d, ReLU, sigmoid, gate), torch.compile of it, the fused Triton path.

    python -m benchmarks.bench_prm [--quick] [--device cpu|cuda] [--dtypes bf16,fp16,fp32]

Modes: fwd (training forward, running stats updated), bwd, fwd+bwd (training), eval (inference forward).
Bytes counted (the fewest a fused gate must move, (N,C,1,1) and (C,) vectors ignored): training fwd reads u and
o1 and writes out (3 maps); bwd reads grad, o1, u and writes do1, du (5 maps); fwd+bwd 8; eval 3.
"""

from __future__ import annotations

import functools

import torch

from benchmarks import common
from rsn_fast.ops.prm_gate import prm_spatial_gate

OP = "prm_spatial_gate"
PROVIDERS = ["eager", "triton", "cuda", "compile"]  # compile last: it is the slow one to set up
MODES = ["fwd", "bwd", "fwd+bwd", "eval"]
MAPS = {"fwd": 3, "bwd": 5, "fwd+bwd": 8, "eval": 3}


def shapes(quick: bool, device: str) -> list[tuple[tuple[int, int, int, int], bool]]:
    """((N, C, H, W), channels_last); the first is the issue's goal shape."""
    if device == "cpu":
        return [((2, 16, 16, 12), True)]
    main = ((48, 256, 64, 48), True)
    if quick:
        return [main, ((48, 17, 64, 48), False)]
    return [main, ((48, 256, 64, 48), False), ((48, 256, 96, 72), True), ((48, 17, 64, 48), False)]


def _eager(*args, training):
    return prm_spatial_gate(*args, training=training, backend="reference")


@functools.cache
def _compiled(training: bool):
    return torch.compile(functools.partial(_eager, training=training))


def make_fn(provider: str, training: bool):
    if provider == "eager":
        return functools.partial(_eager, training=training)
    if provider == "compile":
        return _compiled(training)
    return lambda *a: prm_spatial_gate(*a, training=training, backend=provider)


def unusable(provider: str, device: str) -> str | None:
    if provider == "triton":
        return common.triton_usable(device)
    if provider == "cuda":  # the fused CUDA gate kernels (csrc/prm_gate)
        return common.cuda_ext_usable(device, "prm_gate_pointwise_cuda")
    return None


def inputs(shape, cl, dtype, device, grad: bool):
    N, C, H, W = shape
    o1, u = torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype)
    if cl:
        o1, u = o1.to(memory_format=torch.channels_last), u.to(memory_format=torch.channels_last)
    f32 = {"device": device}
    acts = [o1, torch.rand(N, C, 1, 1, device=device, dtype=dtype), u]
    params = [
        (torch.randn(C, 1, 9, 9, **f32) / 9).to(dtype),
        torch.rand(C, **f32) + 0.5,
        torch.randn(C, **f32),
    ]
    bufs_d = [torch.zeros(C, **f32), torch.ones(C, **f32)]
    params2 = [
        (torch.randn(1, C, 1, 1, **f32) / C**0.5).to(dtype),
        torch.ones(1, **f32),
        torch.zeros(1, **f32),
    ]
    bufs_p = [torch.zeros(1, **f32), torch.ones(1, **f32)]
    leaves = acts + params + params2
    if grad:
        for t in leaves:
            t.requires_grad_()
    return [*acts, *params, *bufs_d, *params2, *bufs_p], leaves


def run_case(provider, shape, cl, dtype, device, mode, reps):
    training = mode != "eval"
    fn = make_fn(provider, training)
    args, leaves = inputs(shape, cl, dtype, device, grad=mode in ("bwd", "fwd+bwd"))
    nbytes = MAPS[mode] * args[0].numel() * args[0].element_size()
    if mode in ("fwd", "eval"):
        with torch.no_grad():
            return common.time_ms(lambda: fn(*args), device, reps=reps), nbytes
    g = torch.randn_like(args[0])
    if mode == "bwd":
        y = fn(*args)
        return common.time_ms(
            lambda: torch.autograd.grad(y, leaves, g, retain_graph=True), device, reps=reps
        ), nbytes
    return common.time_ms(lambda: torch.autograd.grad(fn(*args), leaves, g), device, reps=reps), nbytes


def main(argv: list[str] | None = None) -> list[dict]:
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    device = args.device
    dtypes = common.pick(args.dtypes, ["bf16"] if args.quick else ["bf16", "fp16", "fp32"])
    providers = common.pick(args.providers, PROVIDERS)
    modes = common.pick(args.modes, MODES)
    reps = 10 if args.quick or device == "cpu" else 50
    env = common.environment(device)
    copy_gbs = common.copy_bandwidth_gbs(device)
    print(f"# {OP} on {env['GPU']}: copy bandwidth {copy_gbs:.0f} GB/s (read + write)")
    for p in providers:
        why = unusable(p, device)
        if why:
            print(f"# skipping provider {p}: {why}")
    rows = []
    for i, (shape, cl) in enumerate(shapes(args.quick, device)):
        for dt in dtypes:
            for p in providers:
                if unusable(p, device) or (p == "compile" and args.quick and (i > 0 or dt != dtypes[0])):
                    continue  # torch.compile baselines cost minutes: main shape only in quick mode
                for mode in modes:
                    if p == "compile" and args.quick and mode != "fwd+bwd":
                        continue
                    desc = f"{'x'.join(map(str, shape))} {'nhwc' if cl else 'nchw'}"
                    try:
                        ms, nbytes = run_case(p, shape, cl, common.DTYPES[dt], device, mode, reps)
                    except Exception as e:  # a failing provider must not hide the others' numbers
                        print(f"# {p} {mode} {desc} {dt} failed: {type(e).__name__}: {e}")
                        continue
                    rows.append(common.make_row(env, OP, p, mode, desc, dt, ms, nbytes, copy_gbs))
                    if not args.no_csv:  # row by row: a run cut short by a timeout keeps what it measured
                        csv_path = common.write_csv(rows[-1:], OP, device)
                    print(
                        ",".join(rows[-1][f] for f in ("provider", "mode", "shape", "dtype", "ms", "GB/s")),
                        flush=True,
                    )
    print(common.markdown_table(rows))
    if not args.no_csv and rows:
        print(f"# wrote {csv_path}")
    return rows


if __name__ == "__main__":
    main()
