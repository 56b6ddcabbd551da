"""Reading COCO, MPII (MMPose JSON) and detection files into flat per-person records, with checked fields.

A record is a dict: ``image_file`` (path), ``image_id`` (int), ``box`` (x, y, w, h) image px, ``keypoints``
(K, 3) float64 (x, y, v with v in {0, 1, 2}), ``score`` (1.0 for ground truth) and, for MPII, ``head_size``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["AnnotationError", "load_json", "coco_records", "detection_records", "mpii_records"]


class AnnotationError(ValueError):
    """An annotation or detection file that does not have the expected structure."""


def load_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path} is not valid JSON: {e}") from None


def _need(cond: bool, path: str, where: str, what: str) -> None:
    if not cond:
        raise AnnotationError(f"{path}: {where}: {what}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _clip_box(box: list, width: int, height: int) -> list[float] | None:
    """Clip a box to the image (HRNet/OFF style); None when nothing is left."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    # Clip the far corner from the box's own origin (HRNet measures it from the clipped x1, which keeps boxes
    # that lie entirely outside the image).
    x2 = min(width - 1.0, x + max(0.0, w - 1.0)) if width > 0 else x + w
    y2 = min(height - 1.0, y + max(0.0, h - 1.0)) if height > 0 else y + h
    if w <= 0 or h <= 0 or x2 < x1 or y2 < y1 or (x2 - x1) * (y2 - y1) <= 0:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


def check_coco(data: Any, path: str, num_keypoints: int) -> None:
    """Raise AnnotationError naming ``path`` and the first field that is not valid COCO keypoints."""
    _need(isinstance(data, dict), path, "top level", f"expected an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        _need(key in data, path, key, "missing")
        _need(isinstance(data[key], list), path, key, "expected a list")
    for i, im in enumerate(data["images"]):
        w = f"images[{i}]"
        _need(isinstance(im, dict), path, w, "expected an object")
        for key in ("id", "file_name"):
            _need(key in im, path, f"{w}.{key}", "missing")
        _need(isinstance(im["id"], int), path, f"{w}.id", f"expected an integer, got {im['id']!r}")
        _need(isinstance(im["file_name"], str), path, f"{w}.file_name", "expected a string")
    for i, a in enumerate(data["annotations"]):
        w = f"annotations[{i}]"
        _need(isinstance(a, dict), path, w, "expected an object")
        for key in ("image_id", "bbox", "keypoints"):
            _need(key in a, path, f"{w}.{key}", "missing")
        _need(
            isinstance(a["image_id"], int),
            path,
            f"{w}.image_id",
            f"expected an integer, got {a['image_id']!r}",
        )
        b = a["bbox"]
        _need(
            isinstance(b, list) and len(b) == 4 and all(_is_num(v) for v in b),
            path,
            f"{w}.bbox",
            f"expected 4 numbers, got {b!r}",
        )
        kp = a["keypoints"]
        _need(
            isinstance(kp, list) and len(kp) == 3 * num_keypoints,
            path,
            f"{w}.keypoints",
            f"expected {3 * num_keypoints} numbers (K={num_keypoints}), got "
            + (str(len(kp)) if isinstance(kp, list) else repr(kp)),
        )
        _need(all(_is_num(v) for v in kp), path, f"{w}.keypoints", "contains a value that is not a number")
        _need(
            all(v in (0, 1, 2) for v in kp[2::3]),
            path,
            f"{w}.keypoints",
            "visibility flags must be 0, 1 or 2",
        )


def coco_records(
    ann_path: str, img_dir: str, num_keypoints: int, stats: dict | None = None
) -> tuple[list[dict], dict[int, dict]]:
    """Ground-truth person records for training or GT-box evaluation.

    Skips crowd annotations and persons with no labelled keypoint (OFF/MMPose); drops degenerate boxes and
    counts them in ``stats["degenerate_boxes"]``.

    Returns:
        (records, images) where images maps image id → the COCO image entry.
    """
    data = load_json(ann_path)
    check_coco(data, ann_path, num_keypoints)
    images = {im["id"]: im for im in data["images"]}
    stats = stats if stats is not None else {}
    stats.setdefault("degenerate_boxes", 0)
    records = []
    for i, a in enumerate(data["annotations"]):
        if a.get("iscrowd", 0):
            continue
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(num_keypoints, 3)
        if not (kp[:, 2] > 0).any():
            continue
        im = images.get(a["image_id"])
        if im is None:
            raise AnnotationError(f"{ann_path}: annotations[{i}].image_id: no image with id {a['image_id']}")
        box = _clip_box(a["bbox"], int(im.get("width", 0)), int(im.get("height", 0)))
        if box is None:
            stats["degenerate_boxes"] += 1
            continue
        records.append(
            {
                "image_file": os.path.join(img_dir, im["file_name"]),
                "image_id": int(a["image_id"]),
                "box": box,
                "keypoints": kp,
                "score": 1.0,
            }
        )
    if stats["degenerate_boxes"]:
        logger.warning("%s: dropped %d persons with degenerate boxes", ann_path, stats["degenerate_boxes"])
    return records, images


def detection_records(
    dets_path: str,
    images: dict[int, dict],
    img_dir: str,
    num_keypoints: int,
    score_thr: float = 0.0,
    stats: dict | None = None,
) -> list[dict]:
    """Person detections (COCO results format, category 1, score >= ``score_thr``) as records."""
    data = load_json(dets_path)
    _need(isinstance(data, list), dets_path, "top level", "expected a list of detections")
    stats = stats if stats is not None else {}
    stats.setdefault("degenerate_boxes", 0)
    records = []
    for i, d in enumerate(data):
        w = f"[{i}]"
        _need(isinstance(d, dict), dets_path, w, "expected an object")
        for key in ("image_id", "bbox", "score"):
            _need(key in d, dets_path, f"{w}.{key}", "missing")
        _need(
            isinstance(d["bbox"], list) and len(d["bbox"]) == 4 and all(_is_num(v) for v in d["bbox"]),
            dets_path,
            f"{w}.bbox",
            f"expected 4 numbers, got {d['bbox']!r}",
        )
        _need(_is_num(d["score"]), dets_path, f"{w}.score", f"expected a number, got {d['score']!r}")
        if d.get("category_id", 1) != 1 or d["score"] < score_thr:
            continue
        im = images.get(d["image_id"])
        _need(
            im is not None, dets_path, f"{w}.image_id", f"no image with id {d['image_id']} in the annotations"
        )
        # Detection boxes are used as given (OFF); only empty ones are dropped.
        if d["bbox"][2] <= 0 or d["bbox"][3] <= 0:
            stats["degenerate_boxes"] += 1
            continue
        records.append(
            {
                "image_file": os.path.join(img_dir, im["file_name"]),
                "image_id": int(d["image_id"]),
                "box": [float(v) for v in d["bbox"]],
                "keypoints": np.zeros((num_keypoints, 3)),
                "score": float(d["score"]),
            }
        )
    return records


def mpii_records(ann_path: str, img_dir: str, num_keypoints: int = 16) -> list[dict]:
    """MMPose's MPII JSON (a list of {image, center, scale, joints, joints_vis[, headbox]}) as records.

    As MMPose: center[1] += 15·scale, 1-based → 0-based (center and joints), scale ×1.25; the box is the square
    of side scale·200 around the center. Visible joints get v = 2 so OFF masking keeps them.
    """
    data = load_json(ann_path)
    _need(isinstance(data, list), ann_path, "top level", "expected a list of MPII entries")
    records = []
    for i, a in enumerate(data):
        w = f"[{i}]"
        _need(isinstance(a, dict), ann_path, w, "expected an object")
        for key in ("image", "center", "scale", "joints", "joints_vis"):
            _need(key in a, ann_path, f"{w}.{key}", "missing")
        _need(
            isinstance(a["joints"], list) and len(a["joints"]) == num_keypoints,
            ann_path,
            f"{w}.joints",
            f"expected {num_keypoints} joints",
        )
        _need(_is_num(a["scale"]) and a["scale"] > 0, ann_path, f"{w}.scale", "expected a number > 0")
        center = np.asarray(a["center"], dtype=np.float64)
        scale = float(a["scale"])
        if center[0] != -1:
            center[1] += 15 * scale
            center -= 1
        side = scale * 1.25 * 200.0
        kp = np.zeros((num_keypoints, 3))
        kp[:, :2] = np.asarray(a["joints"], dtype=np.float64)[:, :2] - 1
        kp[:, 2] = np.where(np.asarray(a["joints_vis"]) > 0, 2.0, 0.0)
        head = a.get("headbox")
        head_size = 0.6 * float(np.hypot(head[2] - head[0], head[3] - head[1])) if head else 0.0
        records.append(
            {
                "image_file": os.path.join(img_dir, a["image"]),
                "image_id": i,
                "box": [center[0] - side / 2, center[1] - side / 2, side, side],
                "keypoints": kp,
                "score": 1.0,
                "head_size": head_size,
            }
        )
    return records
