"""The iteration-based training loop (one process of a torchrun job, or a plain single process).

Exact resume: the data order is a function of (seed, epoch) and each sample's augmentation of (seed, epoch,
index) (:mod:`rsn_fast.engine.sampling`); a checkpoint stores model, optimizer, scheduler, GradScaler, the
iteration (from which the epoch and the batch offset inside it follow), the seed and every rank's RNG states. So
a run that stops and resumes logs the same losses as one that does not. The seed of a resumed run is the
checkpoint's: a config (or ``--opt train.seed=...``) that names another one is overridden with a warning, since
the rest of the epoch's order and augmentation follow from it. On resume, log.jsonl and TensorBoard continue
from the checkpoint's iteration (the interrupted attempt's later rows are set aside, not duplicated).

Stopping: SIGINT/SIGTERM finish the current iteration, all ranks agree (:mod:`rsn_fast.engine.interrupts`), a
checkpoint is written and :class:`TrainingInterrupted` is raised; ``train.py`` exits with 130/143.

Test hooks (environment variables, used by tests/engine):
  RSN_FAST_TEST_KILL_AT_ITER=k   after iteration k, the last rank SIGKILLs itself once per run folder.
  RSN_FAST_TEST_NAN_AT_ITER=k    the loss of iteration k is made NaN (non-finite loss handling).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
import signal
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rsn_fast import __version__
from rsn_fast.config import Config, save_config, to_dict
from rsn_fast.engine import checkpoint as ckpt
from rsn_fast.engine.distributed import DistInfo, all_gather_objects, barrier, get_info
from rsn_fast.engine.interrupts import StopRequest, TrainingInterrupted, ignore_stop_signals_in_worker
from rsn_fast.engine.optim import build_optimizer, build_scheduler, iters_for
from rsn_fast.engine.run_log import RunLogger, continue_log
from rsn_fast.engine.sampling import (
    ResumableSampler,
    SeededDataset,
    collate_for,
    limit_cv2_threads,
    sample_seed,
)
from rsn_fast.engine.threads import make_tuner

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def targets_on_device(cfg: Config, info: DistInfo) -> bool:
    """Whether the training step draws the target heatmaps on its device instead of the loader workers."""
    where = cfg.data.targets_on
    return where == "device" or (where == "auto" and info.device.type == "cuda")


def build_train_loader(cfg: Config, info: DistInfo, dataset=None) -> tuple[DataLoader, ResumableSampler]:
    """The training loader: seeded samples (:class:`SeededDataset`) in :class:`ResumableSampler` order."""
    if dataset is None:
        from rsn_fast.data import build_dataset

        dataset = build_dataset(cfg, "train", item_targets=False)
    seed = cfg.train.seed
    sampler = ResumableSampler(len(dataset), cfg.data.batch_size, info.rank, info.world_size, seed=seed)
    if cfg.data.backend == "dali":
        # The DALI twin draws each sample's parameters with the same (seed, epoch, index) rule, so the two
        # pipelines are interchangeable and resume stays exact.
        from rsn_fast.data.loaders import build_dali_loader

        loader, _ = build_dali_loader(
            cfg, "train", sampler=sampler, seed_fn=functools.partial(sample_seed, seed), dataset=dataset
        )
        return loader, sampler
    workers = cfg.data.workers
    kwargs: dict[str, Any] = {}
    if workers > 0:
        limit_cv2_threads()
        kwargs["persistent_workers"] = cfg.data.persistent_workers
        kwargs["prefetch_factor"] = cfg.data.prefetch_factor
    loader = DataLoader(
        SeededDataset(dataset, seed),
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_for(dataset, targets=not targets_on_device(cfg, info)),
        pin_memory=cfg.data.pin_memory and info.device.type == "cuda",
        drop_last=True,
        # Worker base seeds come from this generator, not the global one: loader start-up must not
        # shift the training process's RNG (augmentation seeds come from SeededDataset anyway).
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=ignore_stop_signals_in_worker if workers > 0 else None,
        **kwargs,
    )
    return loader, sampler


def build_model_for_training(cfg: Config, info: DistInfo) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model to train — DDP/compiled as configured, plain model) on ``info.device``."""
    from rsn_fast.models import build_model

    model = build_model(cfg, device=info.device).to(info.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    from rsn_fast.selftest import self_check

    self_check(model, cfg, info.device, log=lambda m: print(m, flush=True) if info.is_main else None)
    if cfg.train.sync_bn and info.distributed and info.device.type == "cuda":
        if getattr(model, "fused_backend", None) is not None:  # its kernels compute per-GPU batch statistics
            raise ValueError(
                "train.sync_bn needs model.fused=off: the fused RSB does not synchronise BN statistics"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    plain = model
    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[info.local_rank] if info.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    if cfg.train.compile:
        model = torch.compile(model)
    return model, plain


def build_criterion(cfg: Config, num_stages: int) -> torch.nn.Module:
    from rsn_fast.losses import RSNLoss

    levels = len(cfg.data.resolved_target_kernels(num_stages))
    return RSNLoss(num_stages, levels, masking=cfg.data.loss_masking, topk=cfg.train.ohkm_topk)


def checkpoint_seed(state: dict) -> int | None:
    """The ``train.seed`` a checkpoint was trained with (None if it does not say)."""
    seed = state.get("seed")
    if seed is None:
        seed = ((state.get("config") or {}).get("train") or {}).get("seed")
    return None if seed is None else int(seed)


def _with_checkpoint_seed(cfg: Config, state: dict) -> tuple[Config, str]:
    """``cfg`` with the checkpoint's seed (the data order and augmentation of the rest of the run follow from
    it), and a warning when the config named another one ("" otherwise)."""
    seed = checkpoint_seed(state)
    if seed is None or seed == cfg.train.seed:
        return cfg, ""
    note = (
        f"warning: train.seed {cfg.train.seed} of this config differs from the checkpoint's {seed}: resuming "
        f"with {seed}, so the data order and augmentation continue the run (a new run takes another seed)"
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed)), note


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


class Trainer:
    """Trains ``cfg`` into ``run_dir``; :meth:`fit` runs to ``max_iters`` (or resumes and finishes).

    Args:
        cfg: the resolved config.
        run_dir: the run folder (log.jsonl, config.yaml, tb/, checkpoints/).
        resume: a checkpoint path, "auto" (the newest readable one in run_dir, if any; unreadable newer ones
            are skipped with a warning naming them, and an error is raised if none is readable) or None.
        progress: show a progress bar on rank 0.
    """

    def __init__(self, cfg: Config, run_dir: str, resume: str | None = None, progress: bool = True):
        self.run_dir = run_dir
        self.info = info = get_info()
        warnings: list[str] = []
        if resume == "auto":
            resume, skipped = ckpt.find_resumable(run_dir)
            warnings = [f"warning: skipping unreadable checkpoint {e}" for e in skipped]
        state = None
        if resume:
            state = ckpt.read_checkpoint(resume)  # names the file and the reason if it cannot be used
            cfg, note = _with_checkpoint_seed(cfg, state)
            if note:
                warnings.append(note)
        self.cfg = cfg
        tc = cfg.train
        seed_everything(tc.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
        from rsn_fast.data import build_dataset

        self.train_dataset = build_dataset(cfg, "train", item_targets=False)
        self.loader, self.sampler = build_train_loader(cfg, info, self.train_dataset)
        self.iters_per_epoch = self.sampler.batches_per_epoch
        self.max_iters = iters_for(tc, self.iters_per_epoch)
        self.model, self.plain = build_model_for_training(cfg, info)
        self.criterion = build_criterion(cfg, self.plain.num_stages)
        self.optimizer = build_optimizer(
            self.plain.parameters(), tc, cfg.data.batch_size, info.world_size, info.device
        )
        self.scheduler = build_scheduler(self.optimizer, tc, self.max_iters, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=tc.amp == "fp16")
        self.iteration = 0
        self.best_ap = -math.inf
        self.skipped_steps = 0
        self.skipped_images = 0
        self.checkpoints_written: list[int] = []  # iterations checkpointed by this run (retention order)
        self.last_checkpoint: str | None = None
        seed_everything(tc.seed + 1000 * info.rank + 1)  # distinct per-rank streams from here on
        if resume:
            self._load(resume, state)
            self.last_checkpoint = resume
        moved = continue_log(run_dir, self.iteration) if info.is_main else 0
        self.log = RunLogger(
            run_dir,
            enabled=info.is_main,
            tensorboard=tc.tensorboard,
            total=self.max_iters,
            start=self.iteration,
            progress=progress,
            purge_step=self.iteration + 1 if resume else None,
        )
        if info.is_main:
            save_config(cfg, os.path.join(run_dir, "config.yaml"))
            for w in warnings:
                self.log.info(w)
            if resume:
                self.log.info(f"resumed from {resume} at iteration {self.iteration}")
            if moved:
                self.log.info(
                    f"log.jsonl continues from iteration {self.iteration}: {moved} later row(s) of the "
                    "interrupted attempt moved to log.replaced.jsonl"
                )
            self.log.info(
                f"training {cfg.name}: {self.max_iters} iterations, {self.iters_per_epoch} per epoch, "
                f"{info.world_size} process(es) × batch {cfg.data.batch_size} on {info.device}"
            )

    # -- checkpoints -----------------------------------------------------------------------------------
    def _state(self) -> dict:
        rng = all_gather_objects(ckpt.get_rng_state())  # every rank's streams, saved by rank 0
        return {
            "format": "rsn_fast",
            "version": __version__,
            "model": self.plain.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "seed": self.cfg.train.seed,
            "epoch": self.iteration // self.iters_per_epoch,
            "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.info.world_size,
            "best_ap": self.best_ap,
            "skipped_steps": self.skipped_steps,
            "skipped_images": self.skipped_images,
            "rng": rng,
            "config": to_dict(self.cfg),
        }

    def save_checkpoint(self, best: bool = False) -> None:
        state = self._state()
        if self.info.is_main:
            if best:
                ckpt.atomic_save(state, ckpt.best_path(self.run_dir))
            else:
                path = ckpt.save_iter_checkpoint(
                    state, self.run_dir, self.iteration, self.cfg.train.keep_last, self.checkpoints_written
                )
                self.log.record({"checkpoint": path, "iter": self.iteration})
        if not best:
            self.checkpoints_written.append(self.iteration)
            self.last_checkpoint = os.path.join(self.run_dir, ckpt.CKPT_DIR, f"iter_{self.iteration:08d}.pth")
        barrier()  # nobody runs ahead (or dies) while rank 0 is still writing

    def _load(self, path: str, state: dict | None = None) -> None:
        if state is None:
            state = ckpt.read_checkpoint(path)  # names the file and the reason if it cannot be used
        ckpt.check_fits(self.plain, state, path, self.cfg)
        self.plain.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_ap = float(state.get("best_ap", -math.inf))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.skipped_images = int(state.get("skipped_images", 0))
        rng = state.get("rng") or []
        if len(rng) == self.info.world_size:
            ckpt.set_rng_state(rng[self.info.rank])
        elif self.info.is_main:
            print(
                f"warning: checkpoint from {len(rng)} process(es), resuming on {self.info.world_size}: "
                "RNG states and data order differ from an uninterrupted run",
                flush=True,
            )
        if state.get("iters_per_epoch") not in (None, self.iters_per_epoch) and self.info.is_main:
            print("warning: iterations per epoch changed since the checkpoint", flush=True)

    # -- evaluation ------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        from rsn_fast.engine.evaluator import evaluate

        if (
            self.info.distributed
        ):  # BN statistics drift per rank in training; evaluate rank 0's (= saved) ones
            for b in self.plain.buffers():
                torch.distributed.broadcast(b, 0)
        out = os.path.join(self.run_dir, f"results_iter_{self.iteration:08d}.json")
        metrics = evaluate(self.plain, self.cfg, out_json=out, print_summary=self.info.is_main)
        self.log.record({"eval_iter": self.iteration, **metrics})
        self.log.scalars(self.iteration, metrics, prefix="val/")
        if self.info.is_main:
            self.log.info(f"iteration {self.iteration}: AP {metrics.get('AP', float('nan')):.4f}")
        ap = metrics.get("AP", -math.inf)
        if ap > self.best_ap:
            self.best_ap = ap
            self.save_checkpoint(best=True)
        return metrics

    # -- training --------------------------------------------------------------------------------------
    def _step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = self.info.device
        mem = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        img = batch["image"].to(dev, non_blocking=True).contiguous(memory_format=mem)
        weight = batch["target_weight"].to(dev, non_blocking=True)
        if "target" in batch:
            target = batch["target"].to(dev, non_blocking=True)
        else:  # drawn here on the device (data.targets_on), by the fused megvii_targets kernels on a GPU
            target = self.train_dataset.targets(batch["keypoints"].to(dev, non_blocking=True), weight)
        amp = self.cfg.train.amp
        with torch.autocast(dev.type, dtype=_AMP_DTYPES.get(amp, torch.float32), enabled=amp != "off"):
            outputs = self.model(img)
        loss, parts = self.criterion([o.float() for o in outputs], target, weight)
        nan_at = _env_int("RSN_FAST_TEST_NAN_AT_ITER")
        if nan_at is not None and self.iteration + 1 == nan_at:
            loss = loss * float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.plain.parameters(), self.cfg.train.grad_clip)
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if scale_before is not None and self.scaler.get_scale() < scale_before:
            self.skipped_steps += 1  # fp16 overflow: GradScaler skipped this step and lowered the scale
        self.scheduler.step()
        return loss.detach(), parts

    def _reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], skipped: int) -> dict[str, float]:
        """Losses averaged over ranks; ``skipped_images``: images skipped in this global batch (a sum)."""
        names = ["loss", *parts.keys()]
        vec = torch.stack([loss.float(), *[p.detach().float() for p in parts.values()]])
        vec = torch.cat([vec, vec.new_tensor([float(skipped)])])
        if self.info.distributed:
            torch.distributed.all_reduce(vec, op=torch.distributed.ReduceOp.SUM)
            vec[:-1] /= self.info.world_size
        values = vec.cpu().tolist()
        out = dict(zip(names, values[:-1]))
        out["skipped_images"] = values[-1]
        return out

    def _nonfinite(self, loss: float) -> NonFiniteLossError:
        if self.last_checkpoint is not None:
            where = f"The last good checkpoint is {self.last_checkpoint}"
        else:
            where = (
                "No checkpoint was written yet (the first is due at iteration "
                f"{self.cfg.train.checkpoint_interval})"
            )
        msg = f"non-finite loss ({loss}) at iteration {self.iteration}; stopping. {where}"
        self.log.record({"iter": self.iteration, "error": msg})
        return NonFiniteLossError(msg)

    def _interrupted(self, signum: int, saved: bool) -> TrainingInterrupted:
        """Checkpoint the finished iteration (unless just done) and say where it is."""
        if not saved:
            self.save_checkpoint()
        msg = f"stopped on {signal.Signals(signum).name} after iteration {self.iteration}"
        self.log.record({"msg": f"{msg}; checkpoint {self.last_checkpoint}"})  # train.py prints it
        return TrainingInterrupted(signum, self.iteration, self.last_checkpoint)

    def fit(self) -> dict[str, Any]:
        """Train to ``max_iters``; returns the final metrics.

        Raises:
            NonFiniteLossError: the loss became NaN/inf.
            TrainingInterrupted: SIGINT/SIGTERM; the iteration was finished and checkpointed.
            ImmediateExit: a second stop signal (nothing half-written is left under a checkpoint name).
        """
        with StopRequest() as stop:
            return self._fit(stop)

    def _fit(self, stop: StopRequest) -> dict[str, Any]:
        tc = self.cfg.train
        kill_at = _env_int("RSN_FAST_TEST_KILL_AT_ITER")
        imgs_per_iter = self.cfg.data.batch_size * self.info.world_size
        t_window, n_window, data_window = time.perf_counter(), 0, 0.0
        metrics: dict[str, float] = {}
        # CPU only, when configure_cpu_threads chose tuning (train.cpu_threads: auto, no OMP_NUM_THREADS)
        tuner = make_tuner() if self.info.device.type == "cpu" else None
        while self.iteration < self.max_iters:
            epoch = self.iteration // self.iters_per_epoch
            self.sampler.set_epoch(epoch, self.iteration % self.iters_per_epoch)
            t_data = time.perf_counter()
            for batch in self.loader:
                data_window += time.perf_counter() - t_data
                lr = self.optimizer.param_groups[0]["lr"]
                loss, parts = self._step(batch)
                values = self._reduce(loss, parts, int(batch.get("skipped", 0)))
                self.skipped_images += int(values.pop("skipped_images"))
                if tuner is not None:
                    change = tuner.step(time.perf_counter() - t_data)
                    if change and self.info.is_main:
                        self.log.info(f"iteration {self.iteration + 1}: {change}")
                self.iteration += 1
                n_window += 1
                if not math.isfinite(values["loss"]):
                    raise self._nonfinite(values["loss"])
                self.log.progress(1, loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}")
                last = self.iteration == self.max_iters
                if self.iteration % tc.log_interval == 0 or last or self.iteration == 1:
                    dt = time.perf_counter() - t_window
                    row = {
                        "iter": self.iteration,
                        "epoch": epoch,
                        "lr": lr,
                        **values,
                        "img_s": imgs_per_iter * n_window / max(dt, 1e-9),
                        "data_time": data_window / n_window,
                        "skipped_steps": self.skipped_steps,
                        "skipped_images": self.skipped_images,
                    }
                    if self.info.device.type == "cpu":
                        row["cpu_threads"] = torch.get_num_threads()
                    self.log.record(row)
                    self.log.scalars(
                        self.iteration,
                        {k: v for k, v in row.items() if k not in ("iter", "epoch")},
                        prefix="train/",
                    )
                    t_window, n_window, data_window = time.perf_counter(), 0, 0.0
                saved = self.iteration % tc.checkpoint_interval == 0 or last
                if saved:
                    self.save_checkpoint()
                signum = stop.agreed(self.info.distributed)  # every rank stops after the same iteration
                if signum is not None:
                    raise self._interrupted(signum, saved)
                if tc.eval_interval and self.iteration % tc.eval_interval == 0 and not last:
                    self.evaluate()
                if kill_at is not None and self.iteration == kill_at:
                    self._test_kill()
                if last:
                    break
                t_data = time.perf_counter()
        if tc.eval_at_end:
            metrics = self.evaluate()
        self.log.info(
            f"done: {self.iteration} iterations, {self.skipped_steps} fp16 steps skipped, "
            f"{self.skipped_images} unreadable images skipped"
        )
        return {"iteration": self.iteration, "best_ap": self.best_ap, **metrics}

    def _test_kill(self) -> None:
        marker = os.path.join(self.run_dir, ".test_killed_once")
        if self.info.rank == self.info.world_size - 1 and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(self.iteration))
            os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        self.log.close()
        # Stop loader workers now, in order, rather than from finalisers at exit.
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
