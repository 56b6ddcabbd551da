"""Demo training speed (iterations/s) over a short window, per CPU thread setting.

``python -m benchmarks.bench_demo_threads [--iters 60] [--max-seconds 120] [--threads 1 2] [--policy default passive spin=N]``

Each setting runs in a fresh process (the OpenMP wait policy must be set before torch is imported): it builds the
demo's Trainer (``configs/demo_synthetic.yaml``) on a small synthetic set in a temporary folder, runs 5 warm-up
iterations, then times ``--iters`` iterations (or as many as fit in ``--max-seconds``). The load average at the
start and end of each window is printed next to the figure: on a shared machine it is part of the result.
Start a CPU hog yourself (``python -c 'while True: pass' &``) to measure beside one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _forever(loader):
    while True:  # epochs of the small set are shorter than the window
        yield from loader


def _one(data: str, threads: str, iters: int, max_seconds: float, opts: list[str]) -> dict:
    import torch

    from rsn_fast.config import load_config
    from rsn_fast.engine.distributed import init_distributed
    from rsn_fast.engine.threads import configure_cpu_threads, make_tuner
    from rsn_fast.engine.trainer import Trainer

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(repo, "configs", "demo_synthetic.yaml"), [f"data.root={data}", *opts])
    init_distributed("cpu")
    configure_cpu_threads(threads)  # "auto": the trainer's tuner, stepped below as in Trainer.fit
    tuner = make_tuner()
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, run, progress=False)
        try:
            batches = _forever(trainer.loader)
            for _ in range(5):
                trainer._step(next(batches))
            load0 = os.getloadavg()[0]
            t0, n = time.perf_counter(), 0
            used = []
            while n < iters and time.perf_counter() - t0 < max_seconds:
                t = time.perf_counter()
                trainer._step(next(batches))
                used.append(torch.get_num_threads())
                if tuner is not None:
                    tuner.step(time.perf_counter() - t)
                n += 1
            dt = time.perf_counter() - t0
        finally:
            trainer.close()
    return {
        "threads": threads,
        "iters": n,
        "seconds": dt,
        "it_s": n / dt,
        "load": [load0, os.getloadavg()[0]],
        "used": {k: used.count(k) for k in sorted(set(used), reverse=True)},
    }


def _threads(text: str) -> str:
    if text == "auto" or (text.isdigit() and int(text) > 0):
        return text
    raise argparse.ArgumentTypeError(f"expected a thread count or auto, got {text!r}")


def _policy(text: str) -> str:
    if text in ("default", "passive") or (text.startswith("spin=") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected default, passive or spin=N, got {text!r}")


def _policy_env(policy: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin="):
        env["GOMP_SPINCOUNT"] = policy[5:]
    return env


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument(
        "--threads",
        nargs="+",
        default=["1", "2"],
        type=_threads,
        help="thread counts, or auto (the training loop's tuner: rsn_fast.engine.threads.ThreadTuner)",
    )
    p.add_argument(
        "--policy",
        nargs="+",
        default=["default", "passive"],
        type=_policy,
        help="default (libgomp spins a while, then sleeps), passive (OMP_WAIT_POLICY=PASSIVE), "
        "spin=N (GOMP_SPINCOUNT=N: spin N rounds, then sleep)",
    )
    p.add_argument("--data", default=None, help="synthetic data folder (default: generated, 256 images)")
    p.add_argument(
        "--opt", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        threads = args._child[0]
        threads = threads if threads == "auto" else int(threads)
        print(json.dumps(_one(args.data, threads, args.iters, args.max_seconds, args.opt)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from rsn_fast.data.synthetic import generate

            data = os.path.join(tmp, "syn")
            generate(data, num_train=256, num_val=8, seed=0, difficulty=0)
        print(
            "| torch threads | wait policy | iterations | seconds | it/s | load avg (start, end) | iterations per count |"
        )
        print("|---|---|---|---|---|---|---|")
        for policy in args.policy:
            for threads in args.threads:
                env = _policy_env(policy)
                cmd = [sys.executable, "-m", "benchmarks.bench_demo_threads", "--data", data]
                cmd += ["--iters", str(args.iters), "--max-seconds", str(args.max_seconds)]
                cmd += ["--opt", *args.opt] if args.opt else []
                cmd += ["--_child", str(threads), policy]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{threads} threads, {policy}: {done.stderr[-2000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                used = ", ".join(f"{k}: {v}" for k, v in r["used"].items())
                print(
                    f"| {threads} | {policy} | {r['iters']} | {r['seconds']:.1f} | {r['it_s']:.2f} | "
                    f"{r['load'][0]:.1f}, {r['load'][1]:.1f} | {used} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
