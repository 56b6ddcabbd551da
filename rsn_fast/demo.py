"""The README's first command: ``python -m rsn_fast.demo``.

Generates the synthetic stick-figure data set if it is absent, trains ``configs/demo_synthetic.yaml`` (RSN-18)
on the CPU (or GPU if present), evaluates it with the data set's detected boxes, prints pycocotools' summary and,
as the last line, ``AP: <value>``.

Options: --config, --data-dir (default data/synthetic), --work-dir (default work_dirs/demo_synthetic),
--opt KEY=VALUE ... (config overrides), --train N / --val M (images generated), --difficulty 0|1|2.
"""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def ensure_dataset(data_dir: str, num_train: int, num_val: int, difficulty: int) -> None:
    """Generate the synthetic set into ``data_dir`` unless its annotation and detection files exist."""
    need = [
        os.path.join(data_dir, "annotations", "person_keypoints_train.json"),
        os.path.join(data_dir, "annotations", "person_keypoints_val.json"),
        os.path.join(data_dir, "detections_val.json"),
    ]
    if all(os.path.isfile(p) for p in need):
        print(f"using the synthetic data set in {data_dir}", flush=True)
        return
    from rsn_fast.data.synthetic import generate

    t0 = time.time()
    print(
        f"generating the synthetic data set in {data_dir} ({num_train} train / {num_val} val images)",
        flush=True,
    )
    generate(data_dir, num_train=num_train, num_val=num_val, seed=0, difficulty=difficulty)
    print(f"generated in {time.time() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from rsn_fast.config import load_config
    from rsn_fast.engine.checkpoint import find_latest
    from rsn_fast.engine.distributed import init_distributed
    from rsn_fast.engine.trainer import Trainer

    t_start = time.time()
    ensure_dataset(args.data_dir, args.train, args.val, args.difficulty)
    cfg = load_config(args.config, [f"data.root={os.path.abspath(args.data_dir)}", *args.opt])
    init_distributed("auto")
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    trainer = Trainer(
        cfg,
        args.work_dir,
        resume="auto" if find_latest(args.work_dir) else None,
        progress=not args.no_progress,
    )
    t_train = time.time()
    try:
        result = trainer.fit()
    finally:
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
    code = main()
    sys.stdout.flush()
    sys.exit(code)
