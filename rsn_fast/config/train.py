"""The ``train:`` section. Owned by rsn_fast.engine; see RSN_SPEC.md section 11 and 16.5."""

from __future__ import annotations

from dataclasses import dataclass, field

_AMP = ("off", "fp16", "bf16")
_OPTIMIZERS = ("adam", "adamw")
_FUSED = ("auto", "torch", "apex", "off")
_SCHEDULES = ("linear", "step", "constant")


@dataclass
class TrainConfig:
    """Optimizer, schedule, precision, checkpointing and logging of a training run.

    Recipes (RSN_SPEC 11, 16.5):
      * paper (default): Adam lr 5e-4, weight decay 1e-5, ``schedule: linear`` (to 0), no warm-up.
      * OFF: ``schedule: linear``, ``warmup_iters: 2400``, ``warmup_ratio: 0.1``, ``base_batch_size: 32``
        (lr 5e-4 per 32 images, i.e. ×8 on 8 GPUs), ``max_iters: 96000``.
      * MMPose: ``schedule: step``, ``warmup_iters: 500``, ``warmup_ratio: 0.001``, ``step_epochs: [170, 190, 200]``,
        ``epochs: 210``, ``weight_decay: 0``, ``base_batch_size: 256``.
    """

    # --- length -----------------------------------------------------------------------------------------
    epochs: int = 200  # used when max_iters is 0; also the unit of step_epochs
    max_iters: int = 0  # 0 → epochs × iterations per epoch
    # The per-GPU batch size and the loader workers are data.batch_size / data.workers; the loss masking is
    # data.loss_masking (owned by the data section, next to the targets).
    seed: int = 0
    # --- optimizer --------------------------------------------------------------------------------------
    optimizer: str = "adam"  # adam | adamw
    lr: float = 5e-4
    # lr is scaled by (data.batch_size × world_size) / base_batch_size when set (OFF: 32, MMPose: 256).
    base_batch_size: int | None = None
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    fused: str = "auto"  # auto (torch fused on CUDA) | torch | apex (apex FusedAdam if importable) | off
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    # --- schedule (stepped every iteration) -------------------------------------------------------------
    schedule: str = "linear"  # linear (decay to 0 at the end) | step (×gamma at step_epochs) | constant
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # lr factor at iteration 0, rising linearly to 1 at warmup_iters
    step_epochs: list[int] = field(default_factory=list)
    gamma: float = 0.1
    # --- numerics and speed -----------------------------------------------------------------------------
    amp: str = "off"  # fp16 | bf16 | off
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP on GPUs
    compile: bool = False  # torch.compile the model
    # CPU training only: torch's thread count. auto = tuned while training among the cores of the process's
    # affinity and fewer, from the measured iteration times (rsn_fast.engine.threads; the last bits of the
    # results then depend on timing); an integer fixes it (bitwise reproducible). OMP_NUM_THREADS wins when set.
    cpu_threads: int | str = "auto"
    # --- loss (rsn_fast.losses.RSNLoss; masking is data.loss_masking) ------------------------------------
    ohkm_topk: int = 8
    # --- checkpoints, evaluation, logging ---------------------------------------------------------------
    checkpoint_interval: int = 2400  # iterations; a checkpoint is always written at the end
    keep_last: int = 3
    eval_interval: int = 0  # iterations; 0 = evaluate only at the end
    eval_at_end: bool = True
    log_interval: int = 20
    work_dir: str = "work_dirs"  # runs go to <work_dir>/<config name> unless --work-dir is given
    tensorboard: bool = True

    def validate(self) -> None:
        from rsn_fast.config import ConfigError

        checks = [
            ("amp", self.amp, _AMP),
            ("optimizer", self.optimizer, _OPTIMIZERS),
            ("fused", self.fused, _FUSED),
            ("schedule", self.schedule, _SCHEDULES),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"train.{name}: {value!r} is not one of {list(allowed)}")
        if isinstance(self.cpu_threads, str) and self.cpu_threads != "auto":
            raise ConfigError(f"train.cpu_threads: {self.cpu_threads!r} is not 'auto' or a thread count")
        if isinstance(self.cpu_threads, int) and self.cpu_threads < 1:
            raise ConfigError(f"train.cpu_threads must be ≥ 1 or 'auto', got {self.cpu_threads}")
        for name in ("epochs", "checkpoint_interval", "ohkm_topk", "log_interval", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters", "eval_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.base_batch_size is not None and self.base_batch_size < 1:
            raise ConfigError(f"train.base_batch_size must be ≥ 1, got {self.base_batch_size}")
        if list(self.step_epochs) != sorted(self.step_epochs):
            raise ConfigError(f"train.step_epochs must be increasing, got {self.step_epochs}")
