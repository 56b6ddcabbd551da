"""RSN loss (RSN_SPEC 10.2, 10.3, 16.6): L2 ×0.25 on the three coarse units, OHKM ×1 on the finest, per stage.

Masking modes:

* ``"off"`` (default, the official code): coarse units compare the prediction with ``gt · [v > 1]`` (only
  visible-labelled joints keep their Gaussian; the prediction is not masked, so the network learns to output 0
  for occluded-labelled joints), mean over K·H·W and batch. The finest unit: per-joint MSE over H·W without
  gt masking, times ``[v > 0]``, mean of the top-k per sample, then the batch mean.
* ``"mmpose"``: weights ``min(1, v)`` multiply both the prediction and the target in every unit.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RSNLoss", "ohkm", "target_level"]


def target_level(stage: int, unit: int, num_stages: int, num_levels: int) -> int:
    """Which target level supervises output ``4·stage + unit`` (RSN_SPEC 10.2).

    With 5 levels (kernels 15/11/9/7/5): unit u for non-last stages and u + 1 for the last. With 4 levels and a
    single stage: unit u.
    """
    if num_levels == 5:
        return unit + 1 if stage == num_stages - 1 else unit
    if num_levels == 4 and num_stages == 1:
        return unit
    raise ValueError(
        f"{num_levels} target levels do not fit {num_stages} stage(s): use 4 kernels (e.g. [11, 9, 7, 5]) "
        "for one stage or 5 (e.g. [15, 11, 9, 7, 5]) for any number of stages"
    )


def ohkm(per_joint: torch.Tensor, topk: int) -> torch.Tensor:
    """Online hard keypoint mining: the mean of the ``topk`` largest of (N, K) per-joint losses, batch mean."""
    k = min(topk, per_joint.shape[1])
    return per_joint.topk(k, dim=1).values.mean(dim=1).mean()


class RSNLoss(nn.Module):
    """Sum over stages and units of the per-output losses.

    Args:
        num_stages: S; the model gives S·4 outputs, index 4·s + u.
        num_levels: L, the number of target levels in the batch (4 or 5).
        masking: "off" (the official code; "official" is the same) or "mmpose".
        topk: OHKM's k (8); capped at K for sets with fewer keypoints.
        coarse_weight: weight of the three coarse units (0.25); the finest unit has weight 1.

    ``forward(outputs, target, target_weight)`` with outputs a list of S·4 tensors (N, K, Hh, Wh), target
    (N, L, K, Hh, Wh) on the 0..255 scale and target_weight (N, K) the raw visibility 0/1/2 returns
    ``(total, {"stage{s}_unit{u}": weighted loss, detached})``; the values sum to the total.
    """

    def __init__(
        self,
        num_stages: int,
        num_levels: int,
        masking: str = "off",
        topk: int = 8,
        coarse_weight: float = 0.25,
    ):
        super().__init__()
        masking = "off" if masking == "official" else masking
        if masking not in ("off", "mmpose"):
            raise ValueError(f"masking must be 'off' (= 'official') or 'mmpose', got {masking!r}")
        self.num_stages = num_stages
        self.num_levels = num_levels
        self.masking = masking
        self.topk = topk
        self.coarse_weight = coarse_weight
        self.levels = [
            target_level(s, u, num_stages, num_levels) for s in range(num_stages) for u in range(4)
        ]

    def unit_loss(
        self, pred: torch.Tensor, gt: torch.Tensor, vis: torch.Tensor, finest: bool
    ) -> torch.Tensor:
        """Unweighted loss of one output: pred, gt (N, K, H, W), vis (N, K) raw visibility."""
        pred = pred.float()
        if self.masking == "mmpose":
            w = (vis > 0).to(pred.dtype)[..., None, None]
            diff = pred * w - gt * w
        elif finest:
            diff = pred - gt
        else:
            diff = pred - gt * (vis > 1).to(pred.dtype)[..., None, None]
        sq = diff * diff
        if not finest:
            return sq.mean()
        per_joint = sq.mean(dim=(2, 3))
        if self.masking == "off":
            per_joint = per_joint * (vis > 0).to(per_joint.dtype)
        return ohkm(per_joint, self.topk)

    def forward(
        self, outputs: list[torch.Tensor], target: torch.Tensor, target_weight: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if len(outputs) != 4 * self.num_stages:
            raise ValueError(
                f"expected {4 * self.num_stages} outputs ({self.num_stages} stages × 4), got {len(outputs)}"
            )
        if target.dim() != 5 or target.shape[1] != self.num_levels:
            raise ValueError(f"target must be (N, {self.num_levels}, K, H, W), got {tuple(target.shape)}")
        total = target.new_zeros((), dtype=torch.float32)
        logs: dict[str, torch.Tensor] = {}
        for i, pred in enumerate(outputs):
            s, u = divmod(i, 4)
            gt = target[:, self.levels[i]]
            if pred.shape != gt.shape:
                raise ValueError(f"output {i} is {tuple(pred.shape)} but its target is {tuple(gt.shape)}")
            finest = u == 3
            loss = self.unit_loss(pred, gt, target_weight, finest) * (1.0 if finest else self.coarse_weight)
            logs[f"stage{s}_unit{u}"] = loss.detach()
            total = total + loss
        return total, logs
