"""Evaluate an RSN: ``torchrun [--nproc_per_node G] rsn_fast/test.py --config X --checkpoint C [--dets D]``.

Also ``python rsn_fast/test.py ...`` for one process. Runs the flip test and the configured decoder on every
validation box (ground-truth boxes, or the detections of ``--dets`` / ``data.dets_file``), writes the COCO
results JSON (``--out``) and prints COCOeval's 10 numbers (MPII: PCKh). Each rank evaluates an unpadded shard;
rank 0 gathers every sample exactly once.

Options:
  --config PATH, --checkpoint PATH (our checkpoints, MMPose or OFF weights), --dets JSON, --out JSON,
  --opt KEY=VALUE ..., --device auto|cpu|cuda.

CPU threads as in train.py (:mod:`rsn_fast.engine.threads`): ``OMP_NUM_THREADS`` wins if set, then
``train.cpu_threads`` when it is a number; else the cores of the process's affinity, tuned from the batch times.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate an RSN model (torchrun entry point).")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--checkpoint", required=True, help="weights: an rsn_fast checkpoint, MMPose or OFF")
    p.add_argument("--dets", default=None, help="person detections (COCO results JSON) instead of GT boxes")
    p.add_argument("--out", default=None, help="where to write the COCO keypoint results JSON")
    p.add_argument(
        "--opt", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit code (0 ok, 2 bad config, 1 error, e.g. an unreadable checkpoint)."""
    args = parse_args(argv)
    from rsn_fast.config import ConfigError, load_config
    from rsn_fast.engine.distributed import cleanup, init_distributed
    from rsn_fast.engine.threads import configure_cpu_threads

    overrides = list(args.opt)
    if args.dets:
        overrides += [f"data.dets_file={os.path.abspath(args.dets)}", "data.use_gt_boxes_for_val=false"]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    info = init_distributed(args.device)
    if info.device.type == "cpu":
        threads = configure_cpu_threads(cfg.train.cpu_threads)  # torchrun sets OMP_NUM_THREADS=1: kept
        if info.is_main:
            print(threads, flush=True)
    from rsn_fast.models.checkpoint import CheckpointError

    try:
        metrics = run(cfg, args.checkpoint, args.out, progress=not args.no_progress)
    except CheckpointError as e:  # names the file and the reason (truncated, not a checkpoint, ...)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    if info.is_main:
        main_key = "PCKh" if cfg.data.dataset == "mpii" else "AP"
        print(f"{main_key}: {metrics.get(main_key, float('nan')):.4f}", flush=True)
    cleanup()
    return 0


def run(cfg, checkpoint: str, out_json: str | None = None, progress: bool = True) -> dict[str, float]:
    """Build the model from ``cfg``, load ``checkpoint`` and evaluate on the validation split."""
    import torch

    from rsn_fast.engine.checkpoint import load_model_weights
    from rsn_fast.engine.distributed import get_info
    from rsn_fast.engine.evaluator import evaluate
    from rsn_fast.models import build_model

    info = get_info()
    model = build_model(cfg, device=info.device)
    load_model_weights(model, checkpoint, cfg=cfg)
    model = model.to(info.device).eval()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return evaluate(model, cfg, out_json=out_json, print_summary=info.is_main, progress=progress)


if __name__ == "__main__":
    from rsn_fast.engine.distributed import clean_exit

    clean_exit(main())
