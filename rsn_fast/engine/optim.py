"""Optimizers and per-iteration learning-rate schedules (paper / OFF / MMPose recipes, RSN_SPEC 11 and 16.5)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from rsn_fast.config import TrainConfig


def scaled_lr(cfg: TrainConfig, batch_size: int, world_size: int) -> float:
    """``cfg.lr`` scaled linearly by the total batch (``batch_size`` per process) over ``base_batch_size``."""
    if cfg.base_batch_size is None:
        return cfg.lr
    return cfg.lr * batch_size * world_size / cfg.base_batch_size


def _apex_fused_adam():
    try:
        from apex.optimizers import FusedAdam  # type: ignore[import-not-found]
    except Exception:
        return None
    return FusedAdam


def build_optimizer(
    params, cfg: TrainConfig, batch_size: int, world_size: int = 1, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """Adam / AdamW with the config's lr (scaled), betas, eps and weight decay.

    ``fused``: "auto" and "torch" use torch's fused kernel on CUDA; "apex" uses apex's FusedAdam when apex is
    importable (with a warning and torch's fused Adam otherwise); "off" uses the plain for-each implementation.
    Adam's weight decay is the coupled L2 of OFF (added to the gradient); AdamW's is decoupled.
    """
    lr = scaled_lr(cfg, batch_size, world_size)
    on_cuda = device is not None and device.type == "cuda"
    kwargs = {"lr": lr, "betas": tuple(cfg.betas), "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if cfg.fused == "apex":
        fused_adam = _apex_fused_adam()
        if fused_adam is not None and on_cuda:
            return fused_adam(params, adam_w_mode=cfg.optimizer == "adamw", **kwargs)
        warnings.warn(
            "train.fused=apex but apex is not importable or no GPU is used; using torch's Adam", stacklevel=2
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    if on_cuda and cfg.fused in ("auto", "torch", "apex"):
        kwargs["fused"] = True
    return cls(params, **kwargs)


def lr_factor_fn(cfg: TrainConfig, max_iters: int, iters_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base lr at iteration ``it`` (0-based; the lr used by the step that makes it+1).

    * warm-up (any schedule): ``warmup_ratio + (1 - warmup_ratio) · it / warmup_iters`` for it < warmup_iters.
    * linear: after warm-up, ``(max_iters - it) / (max_iters - warmup_iters)``, reaching 0 at max_iters.
    * step: ``gamma ** (number of step_epochs already reached)``, epochs converted with ``iters_per_epoch``.
    * constant: 1.
    """
    warm = cfg.warmup_iters
    ratio = cfg.warmup_ratio
    steps = [e * iters_per_epoch for e in cfg.step_epochs]
    schedule, gamma = cfg.schedule, cfg.gamma

    def factor(it: int) -> float:
        w = ratio + (1.0 - ratio) * it / warm if it < warm else 1.0
        if schedule == "linear":
            if it < warm:
                return w
            return max(0.0, (max_iters - it) / max(1, max_iters - warm))
        if schedule == "step":
            return w * gamma ** sum(1 for s in steps if it >= s)
        return w

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, max_iters: int, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration with :func:`lr_factor_fn`."""
    fn = lr_factor_fn(cfg, max_iters, iters_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def iters_for(cfg: TrainConfig, iters_per_epoch: int) -> int:
    """Total iterations of a run: ``max_iters`` if set, else ``epochs × iters_per_epoch``."""
    if cfg.max_iters > 0:
        return cfg.max_iters
    return int(math.ceil(cfg.epochs * iters_per_epoch))
