"""``python -m rsn_fast.info [--json]``: versions, GPU, the compiled extension, and each op's backend choice.

For every op in :data:`rsn_fast.ops._dispatch.REGISTRY` it reports which backend would run the op's small
example inputs on the CPU (and on the GPU when there is one) and why the other backends were passed over.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
from typing import Any


def _version(module: str, attr: str = "__version__") -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # not installed, or broken (a failing import is itself worth seeing as "absent")
        return None
    return str(getattr(mod, attr, "installed"))


def versions() -> dict[str, Any]:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "triton": _version("triton"),
        "dali": _version("nvidia.dali"),
        "apex": _version("apex", "__file__") and "installed",
        "numpy": _version("numpy"),
        "opencv": _version("cv2"),
        "pycocotools": "installed" if _version("pycocotools", "__file__") else None,
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
        "onnxruntime": _version("onnxruntime"),
    }


def export_info() -> dict[str, Any]:
    """What export does with our ops (rsn_fast/ops/_export.py) and which ONNX formats this install can write."""
    onnxscript = _version("onnxscript") is not None
    return {
        "mode": "under torch.export / torch.onnx.export / torch.jit.trace every rsn_fast op runs its pure-torch "
        "reference (standard operators: the depthwise op becomes a grouped Conv)",
        "formats": ["onnx", "torchscript", "exported-program"],
        "onnx_exporter": "dynamo (the default; onnxscript installed)"
        if onnxscript
        else "--exporter torchscript only (the default dynamo exporter needs onnxscript)",
        "onnx_parity_check": "onnxruntime" if _version("onnxruntime") is not None else None,
    }


def gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(
            {
                "index": i,
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
            }
        )
    return out


def extension() -> dict[str, Any]:
    from rsn_fast import _ext

    mod, err = _ext.load_extension()
    if mod is None:
        return {"built": False, "error": err, "hint": _ext.BUILD_HINT}
    return {
        "built": True,
        "path": getattr(mod, "__file__", None),
        "with_cuda": _ext.extension_has_cuda(),
        "cuda_archs": _ext.extension_cuda_archs(),
        "cuda_emulation": _ext.extension_is_emulation(),
    }


def import_ops() -> dict[str, str]:
    """Imports every ``rsn_fast.ops.<op>`` so it registers its dispatcher; returns import errors by name."""
    import rsn_fast.ops

    errors = {}
    for info in pkgutil.iter_modules(rsn_fast.ops.__path__):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"rsn_fast.ops.{info.name}")
        except Exception as e:  # report and go on: one broken op must not hide the others
            errors[info.name] = f"{type(e).__name__}: {e}"
    return errors


def backend_choices() -> dict[str, Any]:
    import torch

    from rsn_fast import _ext
    from rsn_fast.ops._dispatch import REGISTRY, BackendError

    import_errors = import_ops()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    ops: dict[str, Any] = {}
    for name in sorted(REGISTRY):
        dispatcher, example = REGISTRY[name]
        ops[name] = {}
        for device in devices:
            entry: dict[str, Any] = {}
            try:
                args = example(device)
                reasons = dispatcher.all_reasons(*args)
                if _ext.extension_is_emulation() and "cuda" in reasons and not reasons["cuda"]:
                    reasons["cuda"] = ["CUDA emulation build: runs only when asked for (backend='cuda')"]
                entry["reasons"] = {k: v for k, v in reasons.items() if v}
                entry["chosen"] = dispatcher.choose(*args).name
            except BackendError as e:
                entry["chosen"] = None
                entry["error"] = str(e)
            except Exception as e:  # an example that cannot even be built is a bug worth showing
                entry["chosen"] = None
                entry["error"] = f"{type(e).__name__}: {e}"
            ops[name][device.type] = entry
    return {
        "ops": ops,
        "import_errors": import_errors,
        "RSN_FAST_BACKEND": os.environ.get("RSN_FAST_BACKEND"),
    }


def collect() -> dict[str, Any]:
    """Everything ``python -m rsn_fast.info`` reports, as a JSON-serialisable dict."""
    import rsn_fast

    return {
        "rsn_fast": rsn_fast.__version__,
        "versions": versions(),
        "gpus": gpus(),
        "extension": extension(),
        "export": export_info(),
        **backend_choices(),
    }


def format_report(info: dict[str, Any]) -> str:
    lines = [f"rsn_fast {info['rsn_fast']}", "", "Versions:"]
    lines += [f"  {k:<12} {v if v is not None else '-'}" for k, v in info["versions"].items()]
    lines += ["", "GPU:"]
    lines += [
        f"  cuda:{g['index']} {g['name']} (sm {g['capability']}, {g['memory_gib']} GiB)" for g in info["gpus"]
    ]
    if not info["gpus"]:
        lines.append("  none visible")
    ext = info["extension"]
    lines += ["", "Compiled extension rsn_fast._C:"]
    if ext["built"]:
        archs = ";".join(ext["cuda_archs"]) or "-"
        lines.append(f"  built: yes ({ext['path']}); CUDA kernels: {'yes' if ext['with_cuda'] else 'no'}")
        lines.append(f"  CUDA archs: {archs}")
        if ext.get("cuda_emulation"):
            lines.append(
                "  CUDA emulation build: the CUDA kernels run on the CPU emulator (csrc/emulation), on CPU tensors, "
                "only with backend='cuda' or RSN_FAST_BACKEND=cuda"
            )
    else:
        lines.append(f"  built: no ({ext['error']})")
        lines.append(f"  {ext['hint']}")
    exp = info["export"]
    lines += ["", "Export (python -m rsn_fast.tools.export):", f"  {exp['mode']}"]
    lines.append(f"  formats: {', '.join(exp['formats'])}; ONNX exporter here: {exp['onnx_exporter']}")
    lines.append(
        f"  onnxruntime parity check: {exp['onnx_parity_check'] or 'not installed (pip install onnxruntime)'}"
    )
    lines += ["", "Op backends (example inputs; first usable in the op's order):"]
    if info["RSN_FAST_BACKEND"]:
        lines.append(f"  RSN_FAST_BACKEND={info['RSN_FAST_BACKEND']} forces that backend")
    for op, per_device in info["ops"].items():
        for device, entry in per_device.items():
            chosen = entry["chosen"] or f"none ({entry.get('error')})"
            lines.append(f"  {op} [{device}]: {chosen}")
            for backend, why in entry.get("reasons", {}).items():
                lines.append(f"      not {backend}: {'; '.join(why)}")
    for op, err in info["import_errors"].items():
        lines.append(f"  {op}: import failed: {err}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsn_fast.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--require-cuda-archs",
        metavar="ARCHS",
        help="exit 1 unless rsn_fast._C is a real CUDA build for these archs, e.g. '7.5;8.0;9.0' (CI)",
    )
    args = parser.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2, default=str) if args.json else format_report(info))
    if args.require_cuda_archs is not None:
        ext = info["extension"]
        want = [a for a in args.require_cuda_archs.split(";") if a]
        have = ext.get("cuda_archs", []) if ext.get("built") and not ext.get("cuda_emulation") else []
        if not ext.get("with_cuda") or not set(want) <= set(have):
            print(
                f"error: rsn_fast._C is not a CUDA build for {want} (has {have or 'none'})", file=sys.stderr
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
