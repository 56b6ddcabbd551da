"""The README's first command: ``python -m rsn_fast.demo``.

Generates the synthetic stick-figure data set if it is absent, trains ``configs/demo_synthetic.yaml`` (RSN-18)
on the CPU (or GPU if present), evaluates it with the data set's detected boxes, prints pycocotools' summary and,
as the last line, ``AP: <value>``.

Options: --config, --data-dir (default data/synthetic), --work-dir (default work_dirs/demo_synthetic),
--opt KEY=VALUE ... (config overrides), --train N / --val M (images generated), --difficulty 0|1|2,
--regenerate (make the data set again).

The data folder's ``manifest.json`` records the generation settings: a folder made with other ones is
regenerated, and a run folder trained on other data is moved aside rather than resumed. Ctrl-C stops after the
current iteration with a checkpoint; the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(_REPO, "configs", "demo_synthetic.yaml")
# Sizes used to make the data set when it is absent (the demo's measured AP/time assume these).
DEMO_TRAIN_IMAGES = 2000
DEMO_VAL_IMAGES = 200
DEMO_DIFFICULTY = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train and evaluate RSN-18 on the synthetic data set (CPU demo).")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--data-dir", default="data/synthetic")
    p.add_argument("--work-dir", default="work_dirs/demo_synthetic")
    p.add_argument("--opt", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--train", type=int, default=DEMO_TRAIN_IMAGES, help="training images to generate")
    p.add_argument("--val", type=int, default=DEMO_VAL_IMAGES, help="validation images to generate")
    p.add_argument("--difficulty", type=int, default=DEMO_DIFFICULTY, choices=(0, 1, 2))
    p.add_argument("--regenerate", action="store_true", help="make the data set again even if it exists")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


MANIFEST = "manifest.json"  # written beside the data, last, once the data set is complete


class DemoDataError(RuntimeError):
    """The data folder holds a data set whose generation settings are unknown."""


def _settings(num_train: int, num_val: int, difficulty: int) -> dict:
    from rsn_fast import __version__

    return {
        "generator": "rsn_fast.data.synthetic",
        "version": __version__,
        "num_train": num_train,
        "num_val": num_val,
        "seed": 0,
        "difficulty": difficulty,
    }


def _same(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "version"} == {k: v for k, v in b.items() if k != "version"}


def read_manifest(data_dir: str) -> dict | None:
    try:
        with open(os.path.join(data_dir, MANIFEST)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def ensure_dataset(
    data_dir: str, num_train: int, num_val: int, difficulty: int, regenerate: bool = False
) -> dict:
    """Make sure ``data_dir`` holds the synthetic set of these settings; returns its manifest.

    A folder made with other settings (its ``manifest.json`` says which) is regenerated; one that holds data but
    no manifest (made by hand or by an older version) is refused unless ``regenerate``. Generation writes to a
    temporary sibling folder that replaces ``data_dir`` when complete, so an interrupted run leaves no half set.

    Raises:
        DemoDataError: data without a manifest and not ``regenerate``.
    """
    want = _settings(num_train, num_val, difficulty)
    have = read_manifest(data_dir)
    if have is not None and _same(have, want) and not regenerate:
        print(f"using the synthetic data set in {data_dir}", flush=True)
        return have
    if have is None and os.path.exists(data_dir) and os.listdir(data_dir) and not regenerate:
        raise DemoDataError(
            f"{data_dir} holds files but no {MANIFEST}, so the settings it was made with are unknown; "
            "pass --regenerate to replace it, or --data-dir for another folder"
        )
    if have is not None:
        changed = ", ".join(
            f"{k} {have.get(k)} -> {v}" for k, v in want.items() if k != "version" and have.get(k) != v
        )
        print(
            f"{data_dir} was made with other settings ({changed or 'regenerate asked'}): regenerating",
            flush=True,
        )
    from rsn_fast.data.synthetic import generate

    t0 = time.time()
    print(
        f"generating the synthetic data set in {data_dir} ({num_train} train / {num_val} val images)",
        flush=True,
    )
    tmp = f"{os.path.normpath(data_dir)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, num_train=num_train, num_val=num_val, seed=want["seed"], difficulty=difficulty)
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump(want, f, indent=1)
    if os.path.exists(data_dir):
        shutil.rmtree(data_dir)  # ours (manifest) or --regenerate was given
    os.replace(tmp, data_dir)
    print(f"generated in {time.time() - t0:.0f} s", flush=True)
    return want


def _check_run_folder(work_dir: str, manifest: dict) -> None:
    """A previous demo run trained on other data is moved aside (not resumed)."""
    from rsn_fast.engine.run_folder import move_aside, previous_run

    used = os.path.join(work_dir, "data_manifest.json")
    if previous_run(work_dir):
        try:
            with open(used) as f:
                same = _same(json.load(f), manifest)
        except (FileNotFoundError, json.JSONDecodeError):
            same = False
        if not same:
            print(f"{work_dir} holds a run on other data: moved to {move_aside(work_dir)}", flush=True)
    os.makedirs(work_dir, exist_ok=True)
    with open(used, "w") as f:
        json.dump(manifest, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    """Returns the exit code: 0 done, 2 data folder refused, 1 unreadable checkpoint, 130/143 interrupted."""
    args = parse_args(argv)
    import torch

    from rsn_fast.config import load_config
    from rsn_fast.engine.distributed import init_distributed
    from rsn_fast.engine.interrupts import ImmediateExit, TrainingInterrupted, exit_code_for
    from rsn_fast.engine.threads import configure_cpu_threads
    from rsn_fast.engine.trainer import Trainer
    from rsn_fast.models.checkpoint import CheckpointError

    t_start = time.time()
    try:
        manifest = ensure_dataset(args.data_dir, args.train, args.val, args.difficulty, args.regenerate)
    except DemoDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _check_run_folder(args.work_dir, manifest)
    cfg = load_config(args.config, [f"data.root={os.path.abspath(args.data_dir)}", *args.opt])
    init_distributed("auto")
    if not torch.cuda.is_available():
        print(configure_cpu_threads(cfg.train.cpu_threads), flush=True)
    again = shlex.join(["python", "-m", "rsn_fast.demo", *(sys.argv[1:] if argv is None else argv)])
    trainer = None
    try:
        trainer = Trainer(cfg, args.work_dir, resume="auto", progress=not args.no_progress)
        t_train = time.time()
        result = trainer.fit()
    except TrainingInterrupted as e:
        print(f"stopped after iteration {e.iteration}; checkpoint {e.path}\nresume with: {again}", flush=True)
        return exit_code_for(e.signum)
    except ImmediateExit as e:
        print(f"{e}; checkpoints are written atomically, none is half-written", file=sys.stderr)
        return exit_code_for(e.signum)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.close()
    t_end = time.time()
    print(
        f"time: data {t_train - t_start:.0f} s, training + evaluation {t_end - t_train:.0f} s, "
        f"total {t_end - t_start:.0f} s",
        flush=True,
    )
    print(f"AP: {result.get('AP', float('nan')):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # during data generation or start-up, before the training loop's handlers
        print("interrupted", file=sys.stderr)
        code = 130
    sys.stdout.flush()
    sys.exit(code)
