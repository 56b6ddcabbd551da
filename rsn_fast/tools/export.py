"""Export a trained RSN for deployment: ONNX, TorchScript or a torch.export ExportedProgram.

    python -m rsn_fast.tools.export --config C --checkpoint P --format onnx|torchscript|exported-program
        --out F [--input-size W H] [--dynamic-batch] [--exporter dynamo|torchscript] [--opset 18] [--no-check]

The model is built from the config, loaded from the checkpoint (any format ``rsn_fast.models.load_checkpoint``
reads) and exported in eval mode, fp32, on the CPU. Its input is ``img`` (N, 3, H, W), normalised as the
config's data pipeline does (``data.color``, mean/std); its output ``heatmaps`` (N, K, H/4, W/4) is the last
stage's last heatmap, to be decoded with :func:`rsn_fast.ops.decode_heatmaps` (or :class:`rsn_fast.Predictor`).
Every rsn_fast op exports as standard operators (:mod:`rsn_fast.ops._export`), so the files need neither
rsn_fast nor its extension to run. With ``--dynamic-batch`` the batch dimension is symbolic.

Unless ``--no-check``, the exported file is run again (onnxruntime for ONNX, when installed) on batch sizes 1
and 3 and compared with PyTorch; the largest error relative to the largest output is printed and must be at
most 1e-4. The output file is written atomically (complete or not at all).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "FORMATS",
    "ExportCheckError",
    "export_model",
    "load_exported",
    "run_exported",
    "check_export",
    "main",
]

FORMATS = ("onnx", "torchscript", "exported-program")
REL_TOL = 1e-4


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the PyTorch model's output."""


def _tmp_path(out: str) -> str:
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(out))
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")


def _export_onnx(model, example, tmp, dynamic_batch, exporter, opset) -> None:
    if exporter == "dynamo":
        from torch.export import Dim

        from rsn_fast.ops._export import onnx_translation_table

        shapes = {"img": {0: Dim("batch", min=1, max=4096)}} if dynamic_batch else None
        prog = torch.onnx.export(
            model, (example,), None, input_names=["img"], output_names=["heatmaps"], dynamo=True,
            dynamic_shapes=shapes, opset_version=opset, custom_translation_table=onnx_translation_table(),
            external_data=False, verbose=False,
        )  # fmt: skip
        prog.save(tmp, external_data=False)
        return
    from rsn_fast.ops._export import register_torchscript_symbolics

    register_torchscript_symbolics(min(opset, 17))
    axes = {"img": {0: "batch"}, "heatmaps": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model, (example,), tmp, input_names=["img"], output_names=["heatmaps"], dynamo=False,
        dynamic_axes=axes, opset_version=min(opset, 17), do_constant_folding=True,
    )  # fmt: skip


def export_model(
    model: torch.nn.Module,
    out: str,
    fmt: str = "onnx",
    input_size: Sequence[int] = (192, 256),
    dynamic_batch: bool = False,
    exporter: str = "dynamo",
    opset: int = 18,
    in_channels: int = 3,
) -> str:
    """Export ``model`` (eval mode, fp32, CPU) to ``out`` atomically and return ``out``.

    Args:
        model: a pose model; its eval-mode forward maps (N, C_in, H, W) to (N, K, H/4, W/4).
        out: the file to write.
        fmt: "onnx", "torchscript" (``torch.jit.trace``) or "exported-program" (``torch.export.save``).
        input_size: (W, H) of the example input, multiples of 32.
        dynamic_batch: make the batch dimension symbolic (the example batch is 2, so that it is not
            specialised to 1).
        exporter: for ONNX, "dynamo" (``torch.onnx.export(dynamo=True)``, needs onnxscript) or "torchscript".
        opset: ONNX opset (the TorchScript exporter supports up to 17).
        in_channels: C_in of the example input.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    w, h = (int(v) for v in input_size)
    if w <= 0 or h <= 0 or w % 32 or h % 32:
        raise ValueError(f"input size (W, H) must be two positive multiples of 32, got {[w, h]}")
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device and dtype
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2 if dynamic_batch else 1, in_channels, h, w, generator=gen)
    tmp = _tmp_path(out)
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(model, example, tmp, dynamic_batch, exporter, opset)
            elif fmt == "torchscript":
                traced = torch.jit.trace(model, (example,), check_trace=False)
                torch.jit.save(traced, tmp)
            else:
                from torch.export import Dim

                shapes = {"img": {0: Dim("batch", min=1, max=4096)}} if dynamic_batch else None
                ep = torch.export.export(_Named(model), (example,), dynamic_shapes=shapes)
                torch.export.save(ep, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


class _Named(torch.nn.Module):
    """Gives the exported program's input the name ``img`` (dynamic_shapes are keyed by argument name)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img)


def load_exported(path: str, fmt: str):
    """Load an exported file once; returns a function (N, C, H, W) float32 tensor → NumPy output."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x.numpy()})[0]
    module = (
        torch.jit.load(path, map_location="cpu") if fmt == "torchscript" else torch.export.load(path).module()
    )

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return module(x).numpy()

    return run


def run_exported(path: str, fmt: str, x: torch.Tensor) -> np.ndarray:
    """Run an exported file on ``x`` (N, C, H, W) float32 and return its output as a NumPy array."""
    return load_exported(path, fmt)(x)


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|: the largest element error relative to the output's scale."""
    if got.shape != ref.shape:
        raise ExportCheckError(f"exported output has shape {got.shape}, PyTorch's {ref.shape}")
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) / scale


def check_export(
    model: torch.nn.Module,
    path: str,
    fmt: str,
    input_size: Sequence[int],
    batch_sizes: Sequence[int] = (1, 3),
    in_channels: int = 3,
    tol: float = REL_TOL,
) -> dict[int, float]:
    """Compare the exported file with ``model`` on seeded inputs of each batch size; {batch: relative error}.

    Raises:
        ExportCheckError: an error above ``tol`` (or the file cannot run that batch size).
    """
    w, h = (int(v) for v in input_size)
    model = copy.deepcopy(model).float().cpu().eval()
    errors = {}
    try:
        runner = load_exported(path, fmt)
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001 - a file that does not load is not usable
        raise ExportCheckError(f"{path}: cannot load the exported {fmt} file: {e}") from e
    for n in batch_sizes:
        x = torch.randn(n, in_channels, h, w, generator=torch.Generator().manual_seed(100 + n))
        with torch.no_grad():
            ref = model(x).numpy()
        try:
            got = runner(x)
        except Exception as e:  # noqa: BLE001 - any runtime failure means the export is not usable
            raise ExportCheckError(f"{path}: running the exported {fmt} file on batch {n} failed: {e}") from e
        errors[n] = relative_error(got, ref)
        if not errors[n] <= tol:
            raise ExportCheckError(
                f"{path}: batch {n}: max error {errors[n]:.3g} of the output scale exceeds {tol:g}"
            )
    return errors


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML config of the model")
    p.add_argument("--checkpoint", required=True, help="weights: an rsn_fast checkpoint, MMPose or OFF")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), default=None,
                   help="example input size (default: the config's model.input_size)")  # fmt: skip
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"], help="ONNX exporter")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--no-check", action="store_true", help="skip running the exported file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Returns the exit code: 0 ok, 2 bad input (config, checkpoint, sizes), 1 the check failed."""
    a = parse_args(argv)
    from rsn_fast.models import CheckpointError
    from rsn_fast.predictor import PredictorError, load_pose_model

    try:
        cfg, model = load_pose_model(a.config, a.checkpoint, device="cpu")
        size = a.input_size or tuple(cfg.model.input_size)
        export_model(
            model, a.out, a.format, size, a.dynamic_batch, a.exporter, a.opset, cfg.model.in_channels
        )
    except (PredictorError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 2**20:.1f} MiB)")
    if a.no_check:
        return 0
    batches = (1, 3) if a.dynamic_batch else (1,)
    try:
        errs = check_export(model, a.out, a.format, size, batches, cfg.model.in_channels)
    except ImportError as e:
        print(f"check skipped: {e}", file=sys.stderr)
        return 0
    except ExportCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("check: " + ", ".join(f"batch {n}: max rel error {v:.2e}" for n, v in errs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
