"""MPII PCKh (MMPose 1.x ``MpiiPCKAccuracy`` convention).

* Head size = diagonal of the annotated head box × 0.6 (``SC_BIAS``), per person (:func:`head_sizes_from_boxes`).
* A joint counts when it is visible and its person's head size is > 0; it is correct when
  ``‖pred − gt‖ / head_size < thr`` (strict).
* Per-joint PCKh in percent; the mean is weighted by the number of visible joints of each kind and, for the 16 MPII
  joints, leaves out pelvis (6) and thorax (7), as the MPII benchmark does. PCKh@0.1 is reported too.
* MMPose adds 1.0 to its 0-based predictions because its ground truth is 1-based (MATLAB); pass ``pred_offset=1.0``
  for that case. Here ``pred`` and ``gt`` are compared in whatever convention they share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MPII_SC_BIAS = 0.6
# joint ids of the MPII order (0 r_ankle … 15 l_wrist) grouped as MMPose reports them
MPII_GROUPS = {
    "Head": (9,),
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
MPII_EXCLUDED = (6, 7)  # pelvis and thorax are not part of the mean


def head_sizes_from_boxes(head_boxes: Any, sc_bias: float = MPII_SC_BIAS) -> np.ndarray:
    """(N, 2, 2) head boxes [[x1, y1], [x2, y2]] → (N,) head sizes = diagonal × ``sc_bias``."""
    b = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 2, 2)
    return np.linalg.norm(b[:, 1] - b[:, 0], axis=1) * sc_bias


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _per_joint(dist: np.ndarray, valid: np.ndarray, thr: float) -> np.ndarray:
    count = valid.sum(axis=0)
    hits = (valid & (dist < thr)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, 100.0 * hits / np.maximum(count, 1), np.nan)


def pckh(
    pred: Any,
    gt: Any,
    visible: Any,
    head_sizes: Any,
    thr: float = 0.5,
    exclude: tuple[int, ...] | None = None,
    pred_offset: float = 0.0,
) -> dict[str, Any]:
    """PCKh per joint and mean.

    Args:
        pred: (N, K, 2) predicted joints.
        gt: (N, K, 2) ground-truth joints (same convention as ``pred`` + ``pred_offset``).
        visible: (N, K) visibility (nonzero = counted).
        head_sizes: (N,) normalisers (head box diagonal × 0.6, see :func:`head_sizes_from_boxes`).
        thr: PCKh threshold (0.5 for PCKh@0.5).
        exclude: joints left out of the mean; None = (6, 7) for K == 16 (MPII), else none.
        pred_offset: added to ``pred`` first (1.0 reproduces MMPose with 1-based MPII ground truth).
    Returns:
        dict: ``PCKh`` (mean at ``thr``), ``PCKh@0.1``, ``per_joint`` and ``per_joint@0.1`` (lists of K values,
        NaN for a joint that is never visible), all in percent; for K == 16 also the MPII groups ``Head``,
        ``Shoulder``, ``Elbow``, ``Wrist``, ``Hip``, ``Knee``, ``Ankle`` at ``thr``.
    """
    p = _np(pred) + pred_offset
    g = _np(gt)
    vis = _np(visible) > 0
    hs = _np(head_sizes).reshape(-1)
    n, k = vis.shape
    if p.shape != (n, k, 2) or g.shape != (n, k, 2) or hs.shape != (n,):
        raise ValueError(
            f"shapes disagree: pred {p.shape}, gt {g.shape}, visible {vis.shape}, head {hs.shape}"
        )
    valid = vis & (hs > 0)[:, None]
    dist = np.linalg.norm(p - g, axis=-1) / np.where(hs > 0, hs, 1.0)[:, None]
    if exclude is None:
        exclude = MPII_EXCLUDED if k == 16 else ()
    weights = vis.sum(axis=0).astype(np.float64)
    weights[list(exclude)] = 0.0
    weights = weights / weights.sum() if weights.sum() > 0 else weights

    def mean(per: np.ndarray) -> float:
        return float(np.nansum(np.where(weights > 0, per, 0.0) * weights))

    per = _per_joint(dist, valid, thr)
    per01 = _per_joint(dist, valid, 0.1)
    out: dict[str, Any] = {
        "PCKh": mean(per),
        "PCKh@0.1": mean(per01),
        "per_joint": per.tolist(),
        "per_joint@0.1": per01.tolist(),
    }
    if k == 16:
        for name, ids in MPII_GROUPS.items():
            out[name] = float(np.mean([per[i] for i in ids]))
    return out
