"""Check the fused kernels on this machine against the reference: ``python -m rsn_fast.selftest``.

``python -m rsn_fast.selftest [--device cuda:0] [--ops rsb prm_gate ...] [--dtypes float16 ...] [--json]``
runs every op with every backend that can run on the device, at small shapes, forward and backward where the op
has a backward, and prints a table: pass/fail, the largest error, the bound and the time of the call. Exit status
1 on any failure. It is what a user runs on a new GPU (and the first step of benchmarks/device_suite.sh).

Checks (``--ops``):

* ``rsb``: :class:`rsn_fast.nn.FusedRSB` (the RSB conv and epilogue ops) against the block's plain module
  math, training mode, output and every gradient, and eval mode (the folded inference path), output.
* ``prm_gate``: :class:`rsn_fast.nn.PoseRefineMachine` with the fused spatial gate against its eager modules.
* ``depthwise``: :class:`rsn_fast.nn.DepthwiseConv2d` against ``nn.Conv2d(groups=C)``.
* ``decode``: :func:`rsn_fast.ops.decode_heatmaps` against its reference (forward only).
* any op name of :data:`rsn_fast.ops._dispatch.REGISTRY`: its backends on the op's example inputs against its
  reference backend (forward only).

The pass rule is the tests' (tests/tolerances.py; the package cannot import tests, so the constants are repeated
here and a test keeps them equal): with ``exact`` the reference in float64 and ``torch_out`` the reference in the
checked dtype, both the relative L2 error and the relative largest-element error of the kernel must be at most
``2 x`` the reference's own error + the dtype's atol.

:func:`self_check` is the hook the trainer and the evaluator call before their first step on a GPU: it checks
each fused block type the model uses (one RSB per distinct width, the PRM gate, depthwise convs, the decoder) in
the run's dtype, and on a mismatch stops (``model.fused_check: error``) or switches that block type to the
reference with a warning (``fallback``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["CheckResult", "SelfCheckError", "check_model", "self_check", "run_selftest", "main"]

# = tests/tolerances.py LOWP_FACTOR / LOWP_ATOL (tests/test_selftest.py asserts they agree)
LOWP_FACTOR = 2.0
LOWP_ATOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SCALE_FLOOR = 1e-3  # see _compare
AMP_DTYPES = {"off": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BLOCK_CHECKS = ("rsb", "prm_gate", "depthwise", "decode")


class SelfCheckError(RuntimeError):
    """A fused op disagrees with the reference (``model.fused_check: error``)."""


@dataclass
class CheckResult:
    op: str
    backend: str
    device: str
    dtype: str
    shape: str
    passed: bool
    max_err: float  # largest |kernel - exact| over all compared tensors, relative to max |exact|
    l2_err: float  # relative L2 error of the worst tensor
    bound: float  # the bound the worst tensor had to meet (largest-element rule)
    ms: float  # time of one call (forward + backward), milliseconds
    worst: str = ""  # which tensor (output or gradient) was worst
    error: str | None = None  # an exception, when the backend raised

    def message(self) -> str:
        why = self.error or (
            f"{self.worst}: largest-element error {self.max_err:.3g} (bound {self.bound:.3g}), "
            f"L2 error {self.l2_err:.3g}"
        )
        return f"{self.op} (backend {self.backend}, device {self.device}, dtype {self.dtype}, {self.shape}): {why}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    if isinstance(x, dict):
        return [t for item in x.values() for t in _tensors(item)]
    return []


def _compare(
    outs: dict, exact: dict, torch_outs: dict, dtype: torch.dtype
) -> tuple[bool, float, float, float, str]:
    """(passed, max_err, l2_err, bound, worst name) over named tensors, by the tests' rule (see module doc)."""
    atol = LOWP_ATOL[dtype]
    worst = (True, 0.0, 0.0, atol, "")
    # errors are relative to each exact tensor's size, floored at SCALE_FLOOR x the largest exact value of the
    # check: a gradient that is mathematically zero (a bias before BatchNorm) is rounding noise on both sides
    floor = SCALE_FLOOR * max([e.abs().max().item() for e in exact.values() if e.numel()] or [1.0])
    worst_ratio = -1.0
    for name, e in exact.items():
        o, t = outs.get(name), torch_outs[name]
        if o is None or o.shape != e.shape:
            return (
                False,
                float("inf"),
                float("inf"),
                atol,
                f"{name} (missing or shape {getattr(o, 'shape', None)})",
            )
        o, e, t = o.double(), e.double(), t.double()
        if not torch.isfinite(o).all():
            return False, float("inf"), float("inf"), atol, f"{name} (non-finite)"
        l2 = max(e.norm().item(), floor * max(e.numel(), 1) ** 0.5, 1e-30)
        mx = max(e.abs().max().item() if e.numel() else 0.0, floor, 1e-30)
        err_l2, ref_l2 = ((o - e).norm() / l2).item(), ((t - e).norm() / l2).item()
        err_mx = ((o - e).abs().max() / mx).item() if e.numel() else 0.0
        ref_mx = ((t - e).abs().max() / mx).item() if e.numel() else 0.0
        b_l2, b_mx = LOWP_FACTOR * ref_l2 + atol, LOWP_FACTOR * ref_mx + atol
        ok = err_l2 <= b_l2 and err_mx <= b_mx
        ratio = max(err_l2 / b_l2, err_mx / b_mx)
        if ratio > worst_ratio:
            worst_ratio = ratio
            worst = (ok, err_mx, err_l2, b_mx, name)
        if not ok:
            return worst
    return worst


def _run_module(
    module: nn.Module, x: torch.Tensor, g: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> tuple[dict[str, torch.Tensor], float]:
    """Output and every gradient of a training-mode forward + backward, under autocast for low precision."""
    module.train()
    x = x.detach().clone().requires_grad_(True)
    _sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
        y = module(x)
    y.backward(g.to(y.dtype))
    _sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    out = {"out": y.detach(), "grad_input": x.grad}
    out.update({f"grad {n}": p.grad for n, p in module.named_parameters() if p.grad is not None})
    return out, ms


def _run_eval(module: nn.Module, x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> dict:
    """Output of an eval-mode forward (the folded inference path of fused blocks), autocast for low precision."""
    module.eval()
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)),
    ):
        return {"eval out": module(x).detach()}


def _randomise(module: nn.Module, seed: int) -> None:
    """Non-trivial BN affine and running statistics (never test on the initial ones/zeros)."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def check_pair(
    op: str,
    backend: str,
    fused: nn.Module,
    reference: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
) -> CheckResult:
    """``fused`` vs ``reference`` (same parameters, CPU modules, copied here) on input ``x`` (float32, CPU)."""
    device = torch.device(device)
    shape = "x" + "x".join(str(s) for s in x.shape)
    try:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            y = copy.deepcopy(reference).eval()(x)
        g = torch.randn(y.shape, generator=gen).to(device)
        xd = x.to(device)
        exact, _ = _run_module(
            copy.deepcopy(reference).to(device, torch.float64), xd.double(), g.double(), torch.float64, device
        )
        ref_lp, _ = _run_module(copy.deepcopy(reference).to(device), xd, g, dtype, device)
        outs, ms = _run_module(copy.deepcopy(fused).to(device), xd, g, dtype, device)
        if device.type == "cuda":  # the first call compiles/autotunes: time a second one
            _, ms = _run_module(copy.deepcopy(fused).to(device), xd, g, dtype, device)
        train = _compare(outs, exact, ref_lp, dtype)
        # eval: the folded inference path (BN folded into the conv, sums and ReLU fused), on BN statistics that
        # are not the initial 0/1 (the model's may still be), the same in both copies (same module structure)
        ev_ref, ev_fused = copy.deepcopy(reference), copy.deepcopy(fused)
        _randomise(ev_ref, seed + 2)
        _randomise(ev_fused, seed + 2)
        ev = _compare(
            _run_eval(ev_fused.to(device), xd, dtype, device),
            _run_eval(copy.deepcopy(ev_ref).to(device, torch.float64), xd.double(), torch.float64, device),
            _run_eval(ev_ref.to(device), xd, dtype, device),
            dtype,
        )
        # the failing one, else the one nearer its bound
        ok, mx, l2, bound, worst = min(train, ev, key=lambda c: (c[0], -c[1] / max(c[3], 1e-30)))
        return CheckResult(op, backend, str(device), _name(dtype), shape, ok, mx, l2, bound, ms, worst)
    except Exception as e:  # a backend that raises is a failure to report, not a crash of the check
        return CheckResult(op, backend, str(device), _name(dtype), shape, False, float("nan"), float("nan"),
                           float("nan"), float("nan"), error=f"{type(e).__name__}: {e}")  # fmt: skip


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------------------------- block checks
def check_rsb_module(block: nn.Module, backend: str, device, dtype, hw=(9, 7), seed=0) -> CheckResult:
    """One RSB-like block (plain or FusedRSB) run fused with ``backend`` vs its plain module math."""
    from rsn_fast.nn.rsb import FusedRSB

    base = copy.deepcopy(block).cpu().float()
    fused = base if isinstance(base, FusedRSB) else FusedRSB.from_module(base)
    plain = copy.deepcopy(fused)
    fused.backend, plain.backend = backend, "plain"
    cin = fused.conv_bn_relu1.conv.in_channels
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, cin, *hw), generator=gen)
    r = check_pair("rsb", backend, fused, plain, x, device, dtype, seed)
    cout = fused.conv_bn3.conv.out_channels
    r.shape = f"{cin}->{cout} s{fused.stride} b{fused.width} {r.shape}"
    return r


def check_prm_module(prm: nn.Module, backend: str, device, dtype, hw=(12, 10), seed=0) -> CheckResult:
    """A PoseRefineMachine with its fused spatial gate on ``backend`` vs its eager modules."""
    fused = copy.deepcopy(prm).cpu().float()
    fused.backend = backend
    eager = copy.deepcopy(fused)
    eager._fused_gate_bns = lambda o1, u: None  # the eager modules: the gate's definition
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, fused.channels, *hw), generator=gen)
    return check_pair("prm_gate", backend, fused, eager, x, device, dtype, seed)


def check_depthwise_module(conv: nn.Conv2d, backend: str, device, dtype, hw=(13, 11), seed=0) -> CheckResult:
    """DepthwiseConv2d on ``backend`` vs nn.Conv2d(groups=C) with the same weights."""
    from rsn_fast.nn.depthwise import DepthwiseConv2d

    c, k = conv.in_channels, conv.kernel_size[0]
    fused = DepthwiseConv2d(c, k, conv.padding[0], bias=conv.bias is not None, backend=backend)
    fused.load_state_dict(conv.state_dict())
    plain = nn.Conv2d(c, c, k, padding=conv.padding[0], groups=c, bias=conv.bias is not None)
    plain.load_state_dict(conv.state_dict())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, c, *hw), generator=gen)
    return check_pair("depthwise", backend, fused, plain, x, device, dtype, seed)


def check_decode(num_keypoints: int, backend: str | None, device, dtype, mode="rsn", seed=0) -> CheckResult:
    """decode_heatmaps on ``backend`` (None: the automatic choice) vs its reference, forward only."""
    from rsn_fast.ops import decode_heatmaps
    from rsn_fast.ops._dispatch import REGISTRY

    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    n, h, w = 3, 16, 12
    heat = torch.rand((n, num_keypoints, h, w), generator=gen) * 255
    centers = torch.rand((n, 2), generator=gen) * 300 + 50
    sizes = torch.rand((n, 2), generator=gen) * 150 + 50
    args = (centers.to(device), sizes.to(device), (48, 64))
    name = backend or REGISTRY["decode_heatmaps"][0].choose(heat.to(device, dtype), *args, mode=mode).name
    shape = f"x{n}x{num_keypoints}x{h}x{w}"
    try:
        exact = decode_heatmaps(heat.double().to(device), *args, mode=mode, backend="reference")
        ref_lp = decode_heatmaps(heat.to(device, dtype), *args, mode=mode, backend="reference")
        _sync(device)
        t0 = time.perf_counter()
        out = decode_heatmaps(heat.to(device, dtype), *args, mode=mode, backend=name)
        _sync(device)
        ms = (time.perf_counter() - t0) * 1e3
        keys = ("coords", "scores")
        ok, mx, l2, bound, worst = _compare(
            dict(zip(keys, out)), dict(zip(keys, exact)), dict(zip(keys, ref_lp)), dtype
        )
        return CheckResult("decode", name, str(device), _name(dtype), shape, ok, mx, l2, bound, ms, worst)
    except Exception as e:
        return CheckResult("decode", name, str(device), _name(dtype), shape, False, float("nan"), float("nan"),
                           float("nan"), float("nan"), error=f"{type(e).__name__}: {e}")  # fmt: skip


def check_registered_op(op: str, backend: str, device, seed=0) -> CheckResult:
    """A registered op's ``backend`` on its example inputs vs its reference backend (float32, forward)."""
    from rsn_fast.ops._dispatch import REGISTRY

    device = torch.device(device)
    dispatcher, example = REGISTRY[op]
    torch.manual_seed(seed)
    args = example(device)

    def cast(a, dt):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.to(dt)
        if isinstance(a, (list, tuple)):
            return type(a)(cast(t, dt) for t in a)
        return a

    try:
        ref = dispatcher.backends["reference"].fn
        try:
            exact = _tensors(ref(*cast(args, torch.float64)))
        except Exception:  # the reference does not take float64: the float32 reference is the bound's base
            exact = _tensors(ref(*args))
        ref_lp = _tensors(ref(*args))
        _sync(device)
        t0 = time.perf_counter()
        out = _tensors(dispatcher.backends[backend].fn(*args))
        _sync(device)
        ms = (time.perf_counter() - t0) * 1e3
        named = lambda ts: {f"output {i}": t for i, t in enumerate(ts)}  # noqa: E731
        ok, mx, l2, bound, worst = _compare(named(out), named(exact), named(ref_lp), torch.float32)
        return CheckResult(
            op, backend, str(device), "float32", "example inputs", ok, mx, l2, bound, ms, worst
        )
    except Exception as e:
        return CheckResult(op, backend, str(device), "float32", "example inputs", False, float("nan"),
                           float("nan"), float("nan"), float("nan"), error=f"{type(e).__name__}: {e}")  # fmt: skip


# ------------------------------------------------------------------------------------------- which backends
def runnable_backends(op: str, device, dtype=torch.float32) -> list[str]:
    """The backends of ``op`` (a check name or a registered op) whose reasons are empty on ``device``."""
    from rsn_fast.ops._dispatch import REGISTRY

    device = torch.device(device)
    ops = {"rsb": ("rsb_conv_bnact_stats", "rsb_epilogue"), "prm_gate": ("prm_spatial_gate",),
           "depthwise": ("depthwise_conv2d",), "decode": ("decode_heatmaps",)}.get(op, (op,))  # fmt: skip
    names = None
    for name in ops:
        dispatcher, example = REGISTRY[name]
        args = [
            a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in example(device)
        ]
        if name == "rsb_conv_bnact_stats":
            args[0] = [s.to(dtype) for s in args[0]]
        ok = {b for b, be in dispatcher.backends.items() if not be.reasons(*args)}
        names = ok if names is None else names & ok
    order = ("reference", "cpp", "triton", "cuda")
    out = [b for b in order if b in (names or ())]
    if op in ("decode",) or op not in BLOCK_CHECKS:
        out = [b for b in out if b != "reference"]  # the reference is the baseline there
    return out


# ------------------------------------------------------------------------------------------- the model hook
def _fused_blocks(model: nn.Module):
    """(kind, representative module, all modules of that kind) for each fused block type in ``model``."""
    from rsn_fast.nn.depthwise import DepthwiseConv2d
    from rsn_fast.nn.prm import PoseRefineMachine
    from rsn_fast.nn.rsb import FusedRSB

    rsbs = [m for m in model.modules() if isinstance(m, FusedRSB) and m.backend != "plain"]
    by_width: dict[int, nn.Module] = {}
    for m in rsbs:
        by_width.setdefault(m.width, m)
    out = [("rsb", m, rsbs) for m in by_width.values()]
    prms = [m for m in model.modules() if isinstance(m, PoseRefineMachine) and m.variant != "official"]
    if prms and prms[0].backend is not None:
        out.append(("prm_gate", prms[0], prms))
    dws = [m for m in model.modules() if isinstance(m, DepthwiseConv2d) and m.backend is not None]
    if dws:
        out.append(("depthwise", dws[0], dws))
    return out


def check_model(
    model: nn.Module,
    device,
    dtype: torch.dtype = torch.float32,
    mode: str = "error",
    decode_mode: str = "rsn",
    log: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Check each fused block type ``model`` uses on ``device`` in ``dtype`` (see module doc).

    Raises:
        SelfCheckError: a check failed and ``mode == "error"``. With ``"fallback"`` the failing block type is
            switched to the reference (RSB: its plain module math; PRM gate and depthwise: the ops' reference)
            with a warning.
    """
    if mode not in ("error", "fallback", "off"):
        raise ValueError(f"model.fused_check must be error, fallback or off, got {mode!r}")
    results = []
    failures = []
    for kind, module, group in _fused_blocks(model):
        check = {"rsb": check_rsb_module, "prm_gate": check_prm_module, "depthwise": check_depthwise_module}[
            kind
        ]
        r = check(module, module.backend, device, dtype)
        results.append(r)
        if not r.passed:
            failures.append(r)
            if mode == "fallback":
                for m in group:
                    m.backend = "plain" if kind == "rsb" else "reference"
                warnings.warn(
                    f"fused self-check failed, {kind} falls back to the reference: {r.message()}",
                    stacklevel=2,
                )
    k = getattr(model, "num_keypoints", 17)
    r = check_decode(k, None, device, dtype, decode_mode)
    results.append(r)
    if not r.passed:
        failures.append(r)
        if mode == "fallback":
            warnings.warn(
                f"fused self-check failed for the decoder (no fallback switch): {r.message()}", stacklevel=2
            )
    if failures and mode == "error":
        raise SelfCheckError(
            "fused self-check failed (set model.fused_check=fallback to run on the reference, or model.fused=off): "
            + "; ".join(r.message() for r in failures)
        )
    return results


_CHECKED: set = set()


def self_check(model: nn.Module, cfg, device, log: Callable[[str], None] = print,
               device_types=("cuda",)) -> list[CheckResult] | None:  # fmt: skip
    """The trainer's and evaluator's hook: :func:`check_model` once per (model, device, dtype) before the first
    step, on GPUs only (``device_types``), when the model is fused and ``model.fused_check`` is not off."""
    from rsn_fast.models.builder import fused_backend_of

    net = getattr(model, "module", model)
    net = getattr(net, "_orig_mod", net)
    device = torch.device(device)
    mode = cfg.model.fused_check
    if mode == "off" or device.type not in device_types or fused_backend_of(net) is None:
        return None
    dtype = AMP_DTYPES[cfg.train.amp]
    key = (id(net), str(device), dtype)
    if key in _CHECKED:
        return None
    t0 = time.perf_counter()
    results = check_model(net, device, dtype, mode, cfg.test.decode_mode)
    _CHECKED.add(key)
    bad = sum(not r.passed for r in results)
    log(
        f"fused self-check on {device} ({_name(dtype)}, backend {fused_backend_of(net)}): "
        f"{len(results) - bad}/{len(results)} checks passed in {time.perf_counter() - t0:.2f} s"
    )
    return results


# ------------------------------------------------------------------------------------------------- the CLI
def _cli_shapes(device: torch.device) -> list[tuple[int, int, int]]:
    # (in, out, stride) RSBs. On a GPU, the real RSN widths at a small spatial size; on the CPU (reference
    # math, the Triton interpreter, the CUDA emulation) narrow blocks so the run stays short.
    if device.type == "cuda":
        return [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2), (512, 512, 1)]
    return [(16, 16, 1), (16, 32, 2)]


def run_selftest(
    device, ops=None, dtypes=None, log: Callable[[str], None] | None = None
) -> list[CheckResult]:
    """Every check in ``ops`` (default: all) with every runnable backend on ``device`` in ``dtypes``."""
    import rsn_fast.ops  # noqa: F401  (registers every op)
    from rsn_fast.models.blocks import ResidualStepsBlock
    from rsn_fast.nn.prm import PoseRefineMachine
    from rsn_fast.ops._dispatch import REGISTRY

    device = torch.device(device)
    if dtypes is None:
        dtypes = [torch.float32, torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    ops = list(ops or (*BLOCK_CHECKS, *sorted(REGISTRY)))
    unknown = [o for o in ops if o not in BLOCK_CHECKS and o not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {list(BLOCK_CHECKS) + sorted(REGISTRY)}")
    results = []

    def add(r: CheckResult) -> None:
        results.append(r)
        if log:
            log(_row(r))

    for op in ops:
        for dtype in dtypes if op in BLOCK_CHECKS else [torch.float32]:
            for backend in runnable_backends(op, device, dtype):
                if op == "rsb":
                    for i, (cin, cout, stride) in enumerate(_cli_shapes(device)):
                        block = ResidualStepsBlock(cin, cout, stride)
                        _randomise(block, i)
                        add(check_rsb_module(block, backend, device, dtype, seed=i))
                elif op == "prm_gate":
                    prm = PoseRefineMachine(16 if device.type == "cpu" else 256)
                    _randomise(prm, 7)
                    add(check_prm_module(prm, backend, device, dtype))
                elif op == "depthwise":
                    conv = nn.Conv2d(24, 24, 9, padding=4, groups=24)
                    add(check_depthwise_module(conv, backend, device, dtype))
                elif op == "decode":
                    add(check_decode(17, backend, device, dtype))
                else:
                    add(check_registered_op(op, backend, device))
    return results


_HEADER = f"{'op':<22} {'backend':<9} {'dtype':<9} {'shape':<28} {'result':<6} {'max err':>9} {'bound':>9} {'ms':>9}"


def _row(r: CheckResult) -> str:
    res = "pass" if r.passed else "FAIL"
    line = f"{r.op:<22} {r.backend:<9} {r.dtype:<9} {r.shape[:28]:<28} {res:<6} {r.max_err:9.2e} {r.bound:9.2e} {r.ms:9.1f}"
    return line if r.passed else line + "\n    " + r.message()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rsn_fast.selftest", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--ops", nargs="+", help=f"checks to run (default all): {', '.join(BLOCK_CHECKS)} or op names"
    )
    p.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), help="default: all three on a GPU, float32 on CPU"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args(argv)
    dtypes = [DTYPES[d] for d in args.dtypes] if args.dtypes else None
    if not args.json:
        print(f"rsn_fast self-test on {args.device} (torch {torch.__version__})")
        print(_HEADER)
    t0 = time.perf_counter()
    try:
        results = run_selftest(args.device, args.ops, dtypes, log=None if args.json else print)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.passed]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    else:
        print(f"{len(results) - len(failed)}/{len(results)} passed in {time.perf_counter() - t0:.1f} s")
    if not results:
        print("no backend could run any check on this device", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
