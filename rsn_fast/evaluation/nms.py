"""OKS-based non-maximum suppression (MMPose ``evaluation.functional.oks_nms``; off by default for RSN, §12.2)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

COCO_SIGMAS = (
    np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
    )
    / 10.0
)


def oks_iou(
    g: np.ndarray,
    d: np.ndarray,
    area_g: float,
    areas_d: np.ndarray,
    sigmas: np.ndarray | None = None,
    vis_thr: float | None = None,
) -> np.ndarray:
    """OKS between one pose and several others (the COCO formula with the mean of the two areas).

    Args:
        g: (K, 3) keypoints (x, y, score) of the kept pose.
        d: (M, K, 3) keypoints of the other poses.
        area_g: area of ``g``.
        areas_d: (M,) areas of ``d``.
        sigmas: (K,) OKS sigmas (None: COCO's).
        vis_thr: if given, only joints with score > vis_thr in both poses count (none: OKS 0).
    Returns:
        (M,) OKS values.
    """
    sig = COCO_SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    var = (sig * 2) ** 2
    d = np.asarray(d, dtype=np.float64).reshape(-1, len(sig), 3)
    g = np.asarray(g, dtype=np.float64).reshape(len(sig), 3)
    dist2 = (d[..., 0] - g[:, 0]) ** 2 + (d[..., 1] - g[:, 1]) ** 2
    mean_area = (area_g + np.asarray(areas_d, dtype=np.float64)) / 2 + np.spacing(1)
    e = dist2 / var / mean_area[:, None] / 2
    use = np.ones_like(e, dtype=bool)
    if vis_thr is not None:
        use = (g[:, 2] > vis_thr)[None, :] & (d[..., 2] > vis_thr)
    count = use.sum(axis=1)
    total = np.where(use, np.exp(-e), 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    thr: float = 0.9,
    sigmas: np.ndarray | None = None,
    vis_thr: float | None = None,
) -> np.ndarray:
    """Greedy OKS-NMS over the poses of one image.

    Args:
        keypoints: (M, K, 3) poses.
        scores: (M,) person scores.
        areas: (M,) areas.
        thr: a pose is dropped when its OKS with a kept, higher-scored pose is > thr.
        sigmas: (K,) OKS sigmas (None: COCO's).
        vis_thr: see :func:`oks_iou`.
    Returns:
        indices of the kept poses, highest score first (ties: later index first, as MMPose's reversed argsort).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    kps = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        ovr = oks_iou(kps[i], kps[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[1:][ovr <= thr]
    return np.array(keep, dtype=np.int64)


def _area(r: dict) -> float:
    if "area" in r:
        return float(r["area"])
    k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
    return float((k[:, 0].max() - k[:, 0].min()) * (k[:, 1].max() - k[:, 1].min()))


def oks_nms_results(
    results: Sequence[dict], thr: float = 0.9, sigmas: np.ndarray | None = None, vis_thr: float | None = None
) -> list[dict]:
    """Apply :func:`oks_nms` image by image to COCO results dicts.

    The area is the result's ``"area"`` (box w·h) when present, else the extent of its keypoints (MMPose's
    fallback). Results keep their input order within the kept set.
    """
    by_image: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        by_image[int(r["image_id"])].append(i)
    kept: set[int] = set()
    for idx in by_image.values():
        kps = np.stack([np.asarray(results[i]["keypoints"], dtype=np.float64).reshape(-1, 3) for i in idx])
        scores = np.array([results[i]["score"] for i in idx])
        areas = np.array([_area(results[i]) for i in idx])
        for j in oks_nms(kps, scores, areas, thr, sigmas, vis_thr):
            kept.add(idx[j])
    return [r for i, r in enumerate(results) if i in kept]
