"""Depthwise convolution benchmark: eager PyTorch (nn.Conv2d groups=C, PyTorch's native depthwise kernel),
torch.compile of the reference, our Triton and CUDA kernels; modes fwd / bwd / fwd+bwd.

    python -m benchmarks.bench_depthwise [--quick] [--device cpu|cuda] [--dtypes bf16,fp16,fp32]

Shapes from the configs: N=48, C=256 at 64×48 and 96×72 (RSN features at 1/4 of 256×192 and 384×288), N=48,
C=17 (heatmaps); kernel 9, and 3/7/13/31 at the first shape. Bytes counted: fwd x + y, bwd grad + x + dx,
fwd+bwd both (the weight is negligible).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from benchmarks import common
from rsn_fast.ops.depthwise_conv2d import depthwise_conv2d

OP = "depthwise_conv2d"
PROVIDERS = ["eager", "triton", "cuda", "compile"]  # compile last: it is the slow one to set up
MODES = ["fwd", "bwd", "fwd+bwd"]


def shapes(quick: bool, device: str) -> list[tuple[tuple[int, int, int, int], int, bool]]:
    """((N, C, H, W), k, channels_last); the first is the main shape."""
    if device == "cpu":  # a smoke test of the harness, not a measurement of interest
        return (
            [((2, 16, 16, 12), 9, True)]
            if quick
            else [((2, 16, 16, 12), 9, True), ((2, 16, 16, 12), 3, False)]
        )
    main = ((48, 256, 64, 48), 9, True)
    if quick:
        return [
            main,
            ((48, 256, 64, 48), 9, False),
            ((48, 256, 64, 48), 31, True),
            ((48, 17, 64, 48), 9, False),
        ]
    out = [main, ((48, 256, 64, 48), 9, False), ((48, 256, 96, 72), 9, True), ((48, 17, 64, 48), 9, False)]
    out += [((48, 256, 64, 48), k, True) for k in (3, 7, 13, 31)]
    return out


def _eager(x, w, b):
    return F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=x.shape[1])


@functools.cache
def _compiled():
    return torch.compile(_eager)


def make_fn(provider: str):
    if provider == "eager":
        return _eager
    if provider == "compile":
        return _compiled()
    return functools.partial(depthwise_conv2d, backend=provider)


def unusable(provider: str, device: str) -> str | None:
    if provider == "triton":
        return common.triton_usable(device)
    if provider == "cuda":
        return common.cuda_ext_usable(device, "depthwise_conv2d_fwd_cuda")
    return None


def run_case(fn, shape, k, cl, dtype, device, mode, reps):
    N, C, H, W = shape
    x = torch.randn(shape, device=device, dtype=dtype)
    if cl:
        x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(C, 1, k, k, device=device) / k).to(dtype)
    b = torch.randn(C, device=device, dtype=dtype)
    numel, size = x.numel(), x.element_size()
    if mode == "fwd":
        with torch.no_grad():
            return common.time_ms(lambda: fn(x, w, b), device, reps=reps), 2 * numel * size
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    g = torch.randn_like(x)
    if mode == "bwd":
        y = fn(x, w, b)
        ms = common.time_ms(
            lambda: torch.autograd.grad(y, (x, w, b), g, retain_graph=True), device, reps=reps
        )
        return ms, 3 * numel * size
    ms = common.time_ms(lambda: torch.autograd.grad(fn(x, w, b), (x, w, b), g), device, reps=reps)
    return ms, 5 * numel * size


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
    for i, (shape, k, cl) in enumerate(shapes(args.quick, device)):
        for dt in dtypes:
            for p in providers:
                if unusable(p, device) or (p == "compile" and args.quick and (i > 0 or dt != dtypes[0])):
                    continue  # torch.compile baselines cost minutes: main shape only in quick mode
                for mode in modes:
                    if p == "compile" and args.quick and mode != "fwd+bwd":
                        continue
                    desc = f"{'x'.join(map(str, shape))} k{k} {'nhwc' if cl else 'nchw'}"
                    try:
                        ms, nbytes = run_case(make_fn(p), shape, k, cl, common.DTYPES[dt], device, mode, reps)
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
