"""COCO keypoint results and evaluation with pycocotools (RSN_SPEC.md §12.1 steps 10-11, §12.2 step 7).

``keypoints_to_coco_results`` turns decoded keypoints into COCO results dicts with the person score of the chosen
reference; ``merge_results`` joins per-rank shards; ``coco_keypoint_eval`` runs pycocotools' ``COCOeval`` for
keypoints (optionally with custom OKS sigmas for non-COCO keypoint sets) and returns its ten numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
SCORE_MODES = ("rsn", "mmpose")


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def person_scores(
    keypoint_scores: Any, box_scores: Any, score_mode: str = "rsn", keypoint_score_thr: float = 0.2
) -> np.ndarray:
    """Person scores.

    Args:
        keypoint_scores: (N, K) keypoint scores.
        box_scores: (N,) detection (box) scores, 1.0 for ground-truth boxes.
        score_mode: ``rsn``: box score × mean of all K keypoint scores (official RSN, §12.1 step 10);
            ``mmpose``: box score × mean of the keypoint scores > ``keypoint_score_thr``, 0 when none is
            (MMPose ``CocoMetric(score_mode='bbox_keypoint')``, §12.2 step 7).
        keypoint_score_thr: threshold of the ``mmpose`` rule.
    Returns:
        (N,) float64 scores.
    """
    ks = _np(keypoint_scores)
    bs = _np(box_scores).reshape(-1)
    if score_mode == "rsn":
        return bs * ks.mean(axis=1)
    if score_mode == "mmpose":
        keep = ks > keypoint_score_thr
        count = keep.sum(axis=1)
        total = np.where(keep, ks, 0.0).sum(axis=1)
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return bs * mean
    raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")


def keypoints_to_coco_results(
    image_ids: Any,
    coords: Any,
    keypoint_scores: Any,
    box_scores: Any,
    category_id: int = 1,
    keypoint_score_thr: float = 0.2,
    score_mode: str = "rsn",
    indices: Any | None = None,
    areas: Any | None = None,
) -> list[dict]:
    """COCO keypoint results, one dict per person.

    Args:
        image_ids: (N,) image ids.
        coords: (N, K, 2) keypoints in image pixels.
        keypoint_scores: (N, K) keypoint scores (written as the third value of each keypoint).
        box_scores: (N,) box scores.
        category_id: COCO category id of the results.
        keypoint_score_thr: threshold of ``score_mode="mmpose"``.
        score_mode: person score rule, see :func:`person_scores`.
        indices: optional (N,) dataset indices, stored as ``"index"`` so that :func:`merge_results` can drop
            duplicates (a DistributedSampler pads shards by repeating items).
        areas: optional (N,) box areas (w·h), stored as ``"area"`` for OKS-NMS (pycocotools recomputes its own).
    Returns:
        list of ``{"image_id", "category_id", "keypoints": [x, y, s]*K, "score"[, "index", "area"]}``.
    """
    ids = _np(image_ids).reshape(-1).astype(np.int64)
    xy = _np(coords)
    ks = _np(keypoint_scores)
    n = ids.shape[0]
    if xy.shape[:1] != (n,) or xy.ndim != 3 or xy.shape[2] != 2 or ks.shape != xy.shape[:2]:
        raise ValueError(
            f"shapes disagree: image_ids {ids.shape}, coords {xy.shape}, keypoint_scores {ks.shape}"
        )
    scores = person_scores(ks, box_scores, score_mode, keypoint_score_thr)
    kps = np.concatenate([xy, ks[..., None]], axis=2).reshape(n, -1)
    idx = None if indices is None else _np(indices).reshape(-1).astype(np.int64)
    ar = None if areas is None else _np(areas).reshape(-1)
    out = []
    for i in range(n):
        r = {
            "image_id": int(ids[i]),
            "category_id": int(category_id),
            "keypoints": [float(v) for v in kps[i]],
            "score": float(scores[i]),
        }
        if idx is not None:
            r["index"] = int(idx[i])
        if ar is not None:
            r["area"] = float(ar[i])
        out.append(r)
    return out


def merge_results(shards: Iterable[Sequence[dict]]) -> list[dict]:
    """Join per-rank result lists: drop repeats of the same (image_id, index), sort like the official code.

    Results without ``"index"`` are all kept. The order is (image_id, score) descending, as the official RSN test
    script writes its results file.
    """
    seen: set[tuple[int, int]] = set()
    out = []
    for shard in shards:
        for r in shard:
            if "index" in r:
                key = (int(r["image_id"]), int(r["index"]))
                if key in seen:
                    continue
                seen.add(key)
            out.append(r)
    out.sort(key=lambda r: (r["image_id"], r["score"]), reverse=True)
    return out


def save_results(results: Sequence[dict], path: str | os.PathLike) -> None:
    """Write results as a COCO results JSON file (atomically: temporary file then rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(list(results), f)
    os.replace(tmp, path)


def coco_keypoint_eval(
    ann_file: str | os.PathLike,
    results: Sequence[dict] | str | os.PathLike,
    sigmas: Sequence[float] | np.ndarray | None = None,
    print_summary: bool = True,
) -> dict[str, float]:
    """Run pycocotools ``COCOeval(iouType='keypoints')`` and return its ten summary numbers.

    Args:
        ann_file: COCO-format ground-truth JSON (person keypoints).
        results: list of results dicts or the path of a results JSON file.
        sigmas: (K,) OKS sigmas for a keypoint set other than COCO's 17 (None: pycocotools' COCO sigmas).
        print_summary: print pycocotools' output (loading, timing and the standard 10-line summary).
    Returns:
        dict with keys AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(results, (str, os.PathLike)):
        with open(results) as f:
            results = json.load(f)
    # loadRes writes bbox/area/id into the dicts: work on copies
    results = [dict(r) for r in results]
    sink = contextlib.nullcontext() if print_summary else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_gt = COCO(os.fspath(ann_file))
        if not results:
            warnings.warn("coco_keypoint_eval: no results to evaluate; every number is 0", stacklevel=2)
            return {k: 0.0 for k in STAT_NAMES}
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        if sigmas is not None:
            sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
            k = len(results[0]["keypoints"]) // 3
            if sig.shape[0] != k:
                raise ValueError(f"{sig.shape[0]} OKS sigmas for results with {k} keypoints")
            ev.params.kpt_oks_sigmas = sig
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
