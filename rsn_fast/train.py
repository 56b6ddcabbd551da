"""Train an RSN: ``torchrun [--nnodes N --nproc_per_node G ...] rsn_fast/train.py --config configs/X.yaml``.

Also ``python rsn_fast/train.py ...`` or ``python -m rsn_fast.train ...`` for one process.

Options:
  --config PATH         the YAML config (required)
  --opt KEY=VALUE ...   config overrides, e.g. ``--opt train.max_iters=1000 data.batch_size=16``
  --resume [auto|PATH]  continue from a checkpoint; "auto" (or no value) takes the newest one of the run folder.
                        Under torchrun, a restarted job (``--max-restarts``) resumes automatically.
  --work-dir DIR        the run folder (default: <train.work_dir>/<config name>)
  --device auto|cpu|cuda

Exit codes: 0 done, 2 bad config, 3 non-finite loss, 1 other errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train an RSN model (torchrun entry point).")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument(
        "--opt", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, help="auto (default) or a checkpoint path"
    )
    p.add_argument("--work-dir", default=None, help="run folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def run_dir_for(cfg, work_dir: str | None, config_path: str) -> str:
    if work_dir:
        return work_dir
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join(cfg.train.work_dir, name)


def main(argv: list[str] | None = None) -> int:
    """Run training; returns the exit code (see the module docstring)."""
    args = parse_args(argv)
    from rsn_fast.config import ConfigError, load_config
    from rsn_fast.engine.distributed import cleanup, init_distributed

    try:
        cfg = load_config(args.config, args.opt)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    info = init_distributed(args.device)
    from rsn_fast.engine.trainer import NonFiniteLossError, Trainer

    run_dir = run_dir_for(cfg, args.work_dir, args.config)
    resume = args.resume
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # torchrun restarted the job after a failure: continue from the last checkpoint
    code = 0
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, progress=not args.no_progress)
        result = trainer.fit()
        if info.is_main:
            ap = result.get("AP")
            print(
                f"finished at iteration {result['iteration']}" + (f", AP {ap:.4f}" if ap is not None else "")
            )
    except NonFiniteLossError as e:
        print(f"error (rank {info.rank}): {e}", file=sys.stderr)
        code = 3
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        if trainer is not None:
            trainer.close()
    if code in (0, 3):  # every rank reaches here together (a NaN is seen on all ranks after the all-reduce)
        cleanup()
    return code


if __name__ == "__main__":
    from rsn_fast.engine.distributed import clean_exit

    clean_exit(main())
