"""A traffic model of one RSN training step (a MODEL, not a measurement): ``python -m benchmarks.traffic``.

No GPU has run this project's kernels, so this counts instead of timing. One training step (forward, loss-free
sum of the outputs, backward, Adam) runs on fake tensors (``torch._subclasses.FakeTensorMode``: shapes only, no
data, no device) under a dispatch mode that sees every kernel-level op, and adds up the bytes each op reads
(its tensor inputs, each storage once) and writes (its outputs). Views, detach and allocations move no bytes.

* eager: the plain model; every aten op (conv, BN, ReLU, add, cat, and their backward ops) is one kernel.
* fused: ``model.fused`` with the fused RSB; each ``torch.ops.rsn_fast.*`` call is counted as ONE kernel that
  reads its inputs and writes its outputs, which is what the Triton backend does (one implicit-GEMM kernel per
  conv with the prologue on load and the statistics on store). The cuda backend runs prologue kernel + cuDNN +
  statistics kernel, so it also writes and re-reads each conv input and re-reads each conv output: for it the
  fused figure is a lower bound. The small per-channel BN-affine ops between kernels are counted as they are.
* Adam (both): 28 bytes per parameter (read fp32 param, grad, exp_avg, exp_avg_sq; write param, exp_avg,
  exp_avg_sq), one fused multi-tensor kernel.

Simplifications: activations and weights in fp16 (``--dtype``) as under amp, without autocast's weight casts;
no loss or target traffic; every op's bytes go to DRAM (no L2 reuse between kernels, none inside one).
Time = bytes / bandwidth (V100 900 GB/s, A100 2.0 TB/s, H200 4.8 TB/s: the vendors' datasheet HBM figures)
beside FLOPs / peak (dense fp16 tensor-core peaks from the same datasheets: V100 SXM2 125 TFLOP/s, A100 SXM
312 TFLOP/s, H200 SXM 989 TFLOP/s); FLOPs from ``torch.utils.flop_counter`` on the eager step (fusion does not
change them). A step is at least max(memory time, FLOP time); both are ideal, real kernels reach a fraction.
``launch_ms`` = kernels x an assumed 5 us per eager launch (LAUNCH_US).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# (name, HBM bytes/s, dense fp16 tensor FLOP/s), vendors' datasheets
GPUS = (("V100", 900e9, 125e12), ("A100", 2.0e12, 312e12), ("H200", 4.8e12, 989e12))
MODELS = {"RSN-18": "configs/rsn18_coco_256x192.yaml", "RSN-50": "configs/rsn50_coco_256x192.yaml"}
ADAM_BYTES_PER_PARAM = 28
# an assumed CPU-side cost of one eager PyTorch kernel launch (a few microseconds is the usual figure; not
# measured here): a step cannot be faster than kernels x this unless CUDA graphs or torch.compile remove launches
LAUNCH_US = 5.0
_FREE = ("detach", "empty", "empty_like", "empty_strided", "device", "alias", "lift_fresh", "zeros_like")


def _storages(x, seen: dict) -> None:
    if isinstance(x, torch.Tensor):
        key = (id(x.untyped_storage()), x.storage_offset(), tuple(x.shape))
        seen.setdefault(key, x.numel() * x.element_size())
    elif isinstance(x, (list, tuple)):
        for t in x:
            _storages(t, seen)
    elif isinstance(x, dict):
        for t in x.values():
            _storages(t, seen)


class TrafficCounter(TorchDispatchMode):
    """Per op name: [calls, bytes read, bytes written]."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.muted = False

    def add(self, key: str, kernels: int, read: int, written: int) -> None:
        row = self.ops[key]
        row[0] += kernels
        row[1] += read
        row[2] += written

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.muted:
            return out
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        schema = getattr(func, "_schema", None)
        is_view = schema is not None and any(
            r.alias_info is not None and not r.alias_info.is_write for r in schema.returns
        )
        if is_view or name.split(".")[-1] in _FREE:
            return out
        key = f"{func.namespace}.{name}" if hasattr(func, "namespace") else name
        reads: dict = {}
        _storages((args, kwargs or {}), reads)
        writes: dict = {}
        _storages(out, writes)
        self.add(key, 1, sum(reads.values()), sum(writes.values()))
        return out


def _nbytes(*xs) -> int:
    seen: dict = {}
    _storages(xs, seen)
    return sum(seen.values())


def _modelled_backward(counter: TrafficCounter):
    """Wrappers for the fused RSB's backward passes (plain Python around kernels, not custom ops): the ops
    inside are muted and the kernels the Triton backend launches are counted instead.

    conv backward (3 kernels): fold the statistics' gradients into dz (read dz, z; write g), convolution
    backward with the prologue recomputed on load (read g, the sources, the weight; write d u, d weight),
    fan-out (read d u and the sources for the ReLU mask; write d sources, d scale / d shift).
    epilogue backward (1 kernel): read grad, out, z, r; write dz, dr and the per-channel sums.
    """
    from rsn_fast.ops.rsb import reference

    conv_bwd, epi_bwd = reference.conv_bnact_stats_backward, reference.epilogue_backward

    def conv(grad_z, grad_sum, grad_sumsq, z, srcs, scale, shift, weight, *rest):
        counter.muted = True
        try:
            out = conv_bwd(grad_z, grad_sum, grad_sumsq, z, srcs, scale, shift, weight, *rest)
        finally:
            counter.muted = False
        dsrcs, dscale, dshift, dw, db = out
        g = _nbytes(z)
        du = sum(_nbytes(d) for d in dsrcs) if rest[4] else _nbytes(dsrcs[0])  # cat: one input per source
        counter.add("rsn_fast.rsb_conv backward: fold", 1, _nbytes(grad_z, z), g)
        counter.add("rsn_fast.rsb_conv backward: conv", 1, g + _nbytes(srcs, weight), du + _nbytes(dw))
        counter.add(
            "rsn_fast.rsb_conv backward: fan-out", 1, du + _nbytes(srcs), _nbytes(dsrcs, dscale, dshift)
        )
        return out

    def epi(grad, out, z, r, scale, r_scale):
        counter.muted = True
        try:
            res = epi_bwd(grad, out, z, r, scale, r_scale)
        finally:
            counter.muted = False
        counter.add("rsn_fast.rsb_epilogue backward", 1, _nbytes(grad, out, z, r), _nbytes(res))
        return res

    return reference, {"conv_bnact_stats_backward": conv, "epilogue_backward": epi}


def count_step(config: str, fused: bool, batch: int, size: tuple[int, int], dtype: torch.dtype) -> dict:
    """Traffic and FLOPs of one training step of ``config`` (eager or fused) on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from rsn_fast.config import load_config
    from rsn_fast.models import build_model
    from rsn_fast.models.builder import fuse_model

    cfg = load_config(config, [f"model.input_size=[{size[1]},{size[0]}]", "model.fused=off"])
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            model = build_model(cfg)
            if fused:
                fuse_model(model, "reference")  # the op boundaries; fake tensors run no kernel
            model.train()
            nparams = sum(p.numel() for p in model.parameters())
            x = torch.empty(batch, 3, *size, dtype=dtype)  # bytes do not depend on the memory layout
            counter = TrafficCounter()
            flops = FlopCounterMode(display=False)
            module, patches = _modelled_backward(counter)
            saved = {k: getattr(module, k) for k in patches}
            try:
                for k, f in patches.items():
                    setattr(module, k, f)
                with counter, flops:
                    outs = model(x)
                    outs = outs if isinstance(outs, (list, tuple)) else [outs]
                    sum(o.sum() for o in outs).backward()
            finally:
                for k, f in saved.items():
                    setattr(module, k, f)
    finally:
        torch.set_default_dtype(default)
    ops = dict(counter.ops)
    ops["adam (multi-tensor)"] = [1, nparams * 16, nparams * 12]
    assert ADAM_BYTES_PER_PARAM == 16 + 12
    return {"ops": ops, "flops": flops.get_total_flops(), "params": nparams}


def summarise(name: str, mode: str, res: dict, batch: int) -> dict:
    ops = res["ops"]
    read = sum(v[1] for v in ops.values())
    written = sum(v[2] for v in ops.values())
    row = {
        "model": name,
        "mode": mode,
        "batch": batch,
        "kernels": sum(v[0] for v in ops.values()),
        "read_GB": read / 1e9,
        "written_GB": written / 1e9,
        "GFLOP": res["flops"] / 1e9,
    }
    for gpu, bw, peak in GPUS:
        row[f"{gpu}_mem_ms"] = (read + written) / bw * 1e3
        row[f"{gpu}_flop_ms"] = res["flops"] / peak * 1e3
    row["launch_ms"] = row["kernels"] * LAUNCH_US / 1e3
    return row


def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            "| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
        )
    return "\n".join(lines)


def _top(res: dict, n: int) -> str:
    items = sorted(res["ops"].items(), key=lambda kv: -(kv[1][1] + kv[1][2]))[:n]
    return "\n".join(f"    {k:<44} {v[0]:6d} calls  {(v[1] + v[2]) / 1e9:8.2f} GB" for k, v in items)


def measured_beside_modelled(rows: list[dict], csv_path: str) -> str:
    """Lines putting bench_train_step's measured step times beside the modelled bounds (the device suite)."""
    with open(csv_path, newline="") as f:
        measured = list(csv.DictReader(f))
    lines = []
    names = {"rsn18": "RSN-18", "rsn50": "RSN-50"}  # bench_train_step's model names
    for m in measured:
        if m.get("op") != "train_step" or not m.get("ms"):
            continue
        model = names.get(m.get("model", ""), m.get("model"))
        mode = "fused" if m.get("provider", "").startswith("fused") else "eager"
        for r in rows:
            if r["model"] == model and r["mode"] == mode and str(r["batch"]) == m.get("batch"):
                gpu = next((g for g, _, _ in GPUS if g.lower() in m.get("GPU", "").lower()), None)
                bound = (
                    f"{max(r[f'{gpu}_mem_ms'], r[f'{gpu}_flop_ms']):.1f} ms (modelled, {gpu})" if gpu else ""
                )
                lines.append(
                    f"{model} {m['provider']} batch {m['batch']}: measured {float(m['ms']):.1f} ms  {bound}"
                )
    return "\n".join(lines) or "(no matching measured rows)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.traffic", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--top", type=int, default=6, help="print the N ops that move the most bytes")
    p.add_argument(
        "--csv", default=None, help="also write the rows here (default: benchmarks/results/model/)"
    )
    p.add_argument("--measured", default=None, help="a bench_train_step CSV to print beside the model")
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows = []
    print(f"TRAFFIC MODEL (counted on fake tensors, not measured): batch {args.batch}, {args.size[0]}x{args.size[1]}, "
          f"{args.dtype}")  # fmt: skip
    for name in args.models:
        eager_flops = 0
        for mode in ("eager", "fused"):
            res = count_step(MODELS[name], mode == "fused", args.batch, tuple(args.size), dtype)
            if mode == "fused":  # flop_counter does not see inside our custom ops; fusion keeps the FLOPs
                res["flops"] = eager_flops
            else:
                eager_flops = res["flops"]
            rows.append(summarise(name, mode, res, args.batch))
            if args.top:
                print(f"  {name} {mode}: top ops by bytes\n{_top(res, args.top)}")
    print(_table(rows))
    for name in args.models:
        e, f = (next(r for r in rows if r["model"] == name and r["mode"] == m) for m in ("eager", "fused"))
        ratio = (e["read_GB"] + e["written_GB"]) / (f["read_GB"] + f["written_GB"])
        print(f"{name}: eager/fused bytes {ratio:.2f}, kernels {e['kernels']} eager -> {f['kernels']} fused")
    out = args.csv or os.path.join(os.path.dirname(__file__), "results", "model", "traffic.csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"rows written to {out}")
    if args.measured:
        print("measured beside modelled:\n" + measured_beside_modelled(rows, args.measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
