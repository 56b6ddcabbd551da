"""Train an RSN: ``torchrun [--nnodes N --nproc_per_node G ...] rsn_fast/train.py --config configs/X.yaml``.

Also ``python rsn_fast/train.py ...`` or ``python -m rsn_fast.train ...`` for one process.

Options:
  --config PATH         the YAML config (required)
  --opt KEY=VALUE ...   config overrides, e.g. ``--opt train.max_iters=1000 data.batch_size=16``
  --resume [auto|PATH]  continue from a checkpoint; "auto" (or no value) takes the newest readable one of the run
                        folder (unreadable newer ones are skipped with a warning naming them; if there are
                        checkpoints but none is readable, it stops). Under torchrun, a restarted job
                        (``--max-restarts``) resumes automatically.
  --overwrite [move|delete]  start over in a run folder that holds a previous run: move it aside to
                        ``<folder>.old-<time>`` (default) or delete it. Without --resume or --overwrite such a
                        folder is refused before anything is touched. ``--resume PATH`` with a checkpoint outside
                        the run folder (another run's) into a folder that holds a run of its own is refused too,
                        unless --overwrite is given (the folder's run is moved aside, then PATH continues there).
  --work-dir DIR        the run folder (default: <train.work_dir>/<config name>)
  --device auto|cpu|cuda

SIGINT (Ctrl-C) or SIGTERM: the current iteration is finished and checkpointed, the resume command is printed,
and the exit code is 130 / 143; a second signal exits at once (checkpoints are written atomically).

Exit codes: 0 done, 1 other errors (e.g. an unreadable checkpoint, named with the reason), 2 bad config or a
run folder that holds a previous run, 3 non-finite loss, 130 SIGINT, 143 SIGTERM.
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
    p.add_argument(
        "--overwrite",
        nargs="?",
        const="move",
        default=None,
        choices=["move", "delete"],
        help="start over in a run folder that holds a previous run: move it aside (default) or delete it",
    )
    p.add_argument("--work-dir", default=None, help="run folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.resume == "auto" and args.overwrite:
        p.error(
            "--resume auto and --overwrite exclude each other"
        )  # a PATH outside the run folder may take both
    return args


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
    from rsn_fast.engine.threads import configure_cpu_threads

    try:
        cfg = load_config(args.config, args.opt)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    info = init_distributed(args.device)
    if info.device.type == "cpu":
        threads = configure_cpu_threads(cfg.train.cpu_threads)  # torchrun sets OMP_NUM_THREADS=1: kept
        if info.is_main:
            print(threads, flush=True)
    from rsn_fast.engine.distributed import broadcast_object
    from rsn_fast.engine.interrupts import ImmediateExit, TrainingInterrupted, exit_code_for
    from rsn_fast.engine.run_folder import RunFolderError, command_line, prepare
    from rsn_fast.engine.trainer import NonFiniteLossError, Trainer
    from rsn_fast.models.checkpoint import CheckpointError

    argv = sys.argv[1:] if argv is None else list(argv)
    run_dir = run_dir_for(cfg, args.work_dir, args.config)
    resume = args.resume
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if resume is None and restarted:
        resume = "auto"  # torchrun restarted the job after a failure: continue from the last checkpoint
    # Rank 0 alone looks at (and may move) the folder; every rank gets its verdict.
    verdict: tuple[int, str] = (0, "")
    if info.is_main:
        try:
            verdict = (0, prepare(run_dir, resume, args.overwrite, argv, restarted))
        except RunFolderError as e:
            verdict = (2, str(e))
    code, note = broadcast_object(verdict)
    if code:
        if info.is_main:
            print(f"error: {note}", file=sys.stderr)
        cleanup()
        return code
    if note and info.is_main:
        print(note, flush=True)
    trainer = None
    agreed_stop = False
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, progress=not args.no_progress)
        result = trainer.fit()
        if info.is_main:
            ap = result.get("AP")
            print(
                f"finished at iteration {result['iteration']}" + (f", AP {ap:.4f}" if ap is not None else "")
            )
    except TrainingInterrupted as e:
        code, agreed_stop = exit_code_for(e.signum), True
        if info.is_main:
            print(
                f"stopped after iteration {e.iteration}; checkpoint {e.path}\n"
                f"resume with: {command_line(argv, add='--resume auto')}",
                flush=True,
            )
    except ImmediateExit as e:
        code = exit_code_for(e.signum)
        print(
            f"{e} (rank {info.rank}); checkpoints are written atomically, none is half-written",
            file=sys.stderr,
        )
    except KeyboardInterrupt:  # before the handlers are installed (start-up) or after they are removed
        code = 130
        print("interrupted", file=sys.stderr)
    except NonFiniteLossError as e:
        print(f"error (rank {info.rank}): {e}", file=sys.stderr)
        code = 3
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except Exception as e:
        # a second signal that landed inside library code (a C++ writer, a loader) can come back wrapped in
        # that code's own error; it is still the user's "quit now"
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, ImmediateExit):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            code = exit_code_for(cause.signum)
            print(f"{cause} (rank {info.rank}); checkpoints are written atomically", file=sys.stderr)
        else:
            traceback.print_exc()
            code = 1
    finally:
        if trainer is not None:
            trainer.close()
    if code in (0, 3) or agreed_stop:
        cleanup()  # every rank reaches here together (a NaN or an agreed stop is seen on all ranks)
    return code


if __name__ == "__main__":
    from rsn_fast.engine.distributed import clean_exit

    clean_exit(main())
