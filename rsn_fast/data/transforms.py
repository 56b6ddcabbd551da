"""Top-down geometry: box → (center, size), augmentation-parameter samplers per recipe, the affine, the warp.

Parameter sampling is kept apart from pixel work so that another pipeline (the DALI twin) can reuse the samplers
and :func:`affine_matrix` and only replace :func:`warp_image`:

1. ``sample_train_params(rng, ...)`` / ``test_params(...)`` → :class:`AugParams` (numbers only).
2. ``affine_matrix(params, input_size, image_width)`` → one (2, 3) matrix per sample (flip included).
3. ``warp_image`` (cv2.warpAffine, linear, zero border) and ``transform_keypoints`` use that same matrix.

Sizes are in image pixels (OFF's ``scale * 200``); ``input_size`` is (W, H).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rsn_fast.data.keypoints import KeypointSet

__all__ = [
    "AugParams",
    "aspect_fit",
    "box_to_center_size",
    "sample_train_params",
    "test_params",
    "affine_matrix",
    "warp_image",
    "crop_input",
    "transform_keypoints",
    "crop_visibility",
]


@dataclass
class AugParams:
    """Per-sample augmentation parameters (all in the original, unflipped image frame).

    Attributes:
        center: (2,) box center, image px.
        size: (2,) box (w, h), image px, aspect-fitted to the input size.
        rotation: degrees, counter-clockwise as in HRNet's ``get_affine_transform``.
        flip: mirror horizontally (OFF: the image is flipped before the crop).
        half_body: whether the box came from a half-body selection.
    """

    center: np.ndarray
    size: np.ndarray
    rotation: float = 0.0
    flip: bool = False
    half_body: bool = False


def aspect_fit(size: Sequence[float], aspect: float) -> np.ndarray:
    """Grow the short side so that w / h == aspect (OFF: if w > aspect·h then h = w/aspect else w = aspect·h)."""
    w, h = float(size[0]), float(size[1])
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([w, h], dtype=np.float64)


def box_to_center_size(
    box: Sequence[float], ext: Sequence[float] = (1.0, 1.0), aspect: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """COCO box (x, y, w, h) → center (x + w/2, y + h/2) and size (w·ext_w, h·ext_h), aspect-fitted if asked."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    size = np.array([w * ext[0], h * ext[1]], dtype=np.float64)
    if aspect is not None:
        size = aspect_fit(size, aspect)
    return center, size


def _truncnorm(rng: np.random.Generator) -> float:
    """A standard normal sample truncated to [-1, 1] (MMPose's ``truncnorm(-1, 1)``), by rejection."""
    while True:
        v = rng.standard_normal()
        if -1.0 <= v <= 1.0:
            return float(v)


def _labelled(keypoints: np.ndarray) -> np.ndarray:
    return keypoints[:, 2] > 0


def _half_body_off(
    rng: np.random.Generator, keypoints: np.ndarray, upper: Sequence[int], ext: Sequence[float], aspect: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """OFF's half-body box (RSN_SPEC 11.1), or None when it gives up."""
    lab = _labelled(keypoints)
    upper_set = set(upper)
    up = [i for i in range(len(keypoints)) if lab[i] and i in upper_set]
    low = [i for i in range(len(keypoints)) if lab[i] and i not in upper_set]
    # OFF draws a *normal* sample here (so "upper" wins about 69% of the time); kept on purpose.
    if rng.standard_normal() < 0.5 and len(up) > 3:
        sel = up
    else:
        sel = low if len(low) > 3 else up
    if len(sel) < 3:
        return None
    pts = keypoints[sel, :2]
    center = pts.mean(axis=0)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    w *= 1.0 + rng.random() * ext[0]
    h *= 1.0 + rng.random() * ext[1]
    return center, aspect_fit((w, h), aspect)


def _half_body_mmpose(
    rng: np.random.Generator, keypoints: np.ndarray, upper: Sequence[int], r: Any, aspect: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """MMPose 1.x ``RandomHalfBody`` box, or None."""
    lab = _labelled(keypoints)
    upper_set = set(upper)
    up = [i for i in range(len(keypoints)) if lab[i] and i in upper_set]
    low = [i for i in range(len(keypoints)) if lab[i] and i not in upper_set]
    if len(up) < r.half_body_min_upper and len(low) < r.half_body_min_lower:
        return None
    if len(low) < r.half_body_min_lower:
        sel = up
    elif len(up) < r.half_body_min_upper:
        sel = low
    else:
        sel = up if rng.random() < r.upper_prioritized_prob else low
    if len(sel) < 2:
        return None
    pts = keypoints[sel, :2]
    center = pts.mean(axis=0)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    return center, aspect_fit((w, h), aspect) * r.half_body_padding


def _off_upper_body(kset: KeypointSet, configured: Sequence[int] | None) -> Sequence[int]:
    if configured is not None:
        return configured
    # OFF's COCO half body counts the hips (ids 11, 12) as upper body.
    return tuple(range(13)) if kset.name == "coco" else kset.upper_body


def sample_train_params(
    rng: np.random.Generator,
    data_cfg: Any,
    box: Sequence[float],
    keypoints: np.ndarray,
    kset: KeypointSet,
    input_size: Sequence[int],
) -> AugParams:
    """Draw one training sample's augmentation for ``data_cfg.recipe``.

    Args:
        rng: the sample's random generator (all draws come from it, in a fixed order).
        data_cfg: a ``DataConfig``.
        box: (x, y, w, h) in image px (for MPII, a box built from its center/scale).
        keypoints: (K, 3) x, y, visibility in image px.
        kset: the keypoint set (upper body ids for half-body crops).
        input_size: (W, H) of the network input.
    """
    aspect = input_size[0] / input_size[1]
    recipe = data_cfg.recipe
    if recipe in ("official", "off"):
        r = data_cfg.official
        center, size = box_to_center_size(box, (r.basic_ext, r.basic_ext))
        size = size * np.array([1.0 + rng.random() * r.random_ext[0], 1.0 + rng.random() * r.random_ext[1]])
        size = aspect_fit(size, aspect)
        half = False
        if r.half_body_prob > 0 and _labelled(keypoints).sum() > r.half_body_min_joints:
            if rng.random() < r.half_body_prob:
                hb = _half_body_off(
                    rng, keypoints, _off_upper_body(kset, r.upper_body), r.half_body_ext, aspect
                )
                if hb is not None:
                    (center, size), half = hb, True
        size = size * (r.shrink * rng.uniform(1.0 - r.scale_factor, 1.0 + r.scale_factor))
        rot = float(rng.uniform(-r.rotation, r.rotation)) if rng.random() < r.rotation_prob else 0.0
        flip = bool(rng.random() < r.flip_prob)
        return AugParams(center, size, rot, flip, half)
    if recipe == "mmpose":
        r = data_cfg.mmpose
        center, size = box_to_center_size(box, (r.box_padding, r.box_padding))
        flip = bool(rng.random() < r.flip_prob)
        half = False
        if r.half_body_prob > 0 and _labelled(keypoints).sum() >= r.half_body_min_total:
            if rng.random() < r.half_body_prob:
                hb = _half_body_mmpose(rng, keypoints, kset.upper_body, r, aspect)
                if hb is not None:
                    (center, size), half = hb, True
        if rng.random() < r.shift_prob:
            center = center + np.array([_truncnorm(rng), _truncnorm(rng)]) * r.shift_factor * size
        if rng.random() < r.scale_prob:
            lo, hi = r.scale_factor
            size = size * (_truncnorm(rng) * (hi - lo) * 0.5 + (hi + lo) * 0.5)
        rot = _truncnorm(rng) * r.rotate_factor if rng.random() < r.rotate_prob else 0.0
        return AugParams(center, aspect_fit(size, aspect), float(rot), flip, half)
    if recipe == "paper":
        r = data_cfg.paper
        center, size = box_to_center_size(box, r.box_ext, aspect)
        half = False
        if r.half_body_prob > 0 and _labelled(keypoints).sum() > 3 and rng.random() < r.half_body_prob:
            hb = _half_body_off(
                rng, keypoints, _off_upper_body(kset, None), data_cfg.official.half_body_ext, aspect
            )
            if hb is not None:
                (center, size), half = hb, True
        size = size * rng.uniform(r.scale_range[0], r.scale_range[1])
        rot = float(rng.uniform(-r.rotation, r.rotation)) if rng.random() < r.rotation_prob else 0.0
        flip = bool(rng.random() < r.flip_prob)
        return AugParams(center, size, rot, flip, half)
    raise ValueError(f"unknown recipe {recipe!r}")


def test_params(data_cfg: Any, box: Sequence[float], input_size: Sequence[int]) -> AugParams:
    """Validation/test crop: the recipe's test box extension, aspect fit, no rotation, no flip."""
    ext = getattr(data_cfg, "official" if data_cfg.recipe == "off" else data_cfg.recipe).test_box_ext
    center, size = box_to_center_size(box, ext, input_size[0] / input_size[1])
    return AugParams(center, size, 0.0, False, False)


def affine_matrix(params: AugParams, input_size: Sequence[int], image_width: int) -> np.ndarray:
    """The (2, 3) float64 matrix taking image px to input px, flip included.

    HRNet/OFF's ``get_affine_transform`` in closed form: the box width maps to the input width, rotation about
    the box center, box center → input center. A flip mirrors the image first (x → W_img − 1 − x), so the box
    center is mirrored too (as OFF does).
    """
    out_w, out_h = float(input_size[0]), float(input_size[1])
    cx, cy = float(params.center[0]), float(params.center[1])
    if params.flip:
        cx = image_width - 1 - cx
    k = out_w / float(params.size[0])
    t = math.radians(params.rotation)
    c, s = math.cos(t) * k, math.sin(t) * k
    m = np.array(
        [[c, s, out_w * 0.5 - (c * cx + s * cy)], [-s, c, out_h * 0.5 - (-s * cx + c * cy)]], dtype=np.float64
    )
    if params.flip:
        flip = np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        m = m @ flip
    return m


def warp_image(image: np.ndarray, matrix: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """cv2.warpAffine with bilinear interpolation and a zero border; (H_img, W_img, C) → (H, W, C)."""
    return cv2.warpAffine(
        image,
        matrix,
        (int(input_size[0]), int(input_size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def crop_input(
    image: np.ndarray,
    params: AugParams,
    input_size: Sequence[int],
    color: str,
    mean: np.ndarray,
    inv_std: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The network input of one box: affine crop, colour order, normalisation.

    Args:
        image: (H_img, W_img, 3) uint8 BGR (as ``cv2.imread`` gives).
        params: the crop (``test_params`` or a training sample).
        input_size: (W, H).
        color: "rgb" (converted) or "bgr" (kept), the model's input colour order (``data.color``).
        mean, inv_std: (3,) float32 in that colour order, 0..255 scale.
    Returns:
        (3, H, W) float32 ``(crop - mean) * inv_std`` and the (2, 3) matrix taking image px to input px.
    """
    m = affine_matrix(params, input_size, image.shape[1])
    crop = warp_image(image, m, input_size)
    if color == "rgb":
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    crop = (crop.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), m


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, flip: bool, flip_index: np.ndarray | None = None
) -> np.ndarray:
    """Apply the sample's matrix to (K, 3) keypoints (x, y, v); with ``flip`` the joint pairs are swapped.

    Returns (K, 3) float64: input-pixel x, y and the unchanged visibility, reordered by ``flip_index``.
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    out[:, :2] = out[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    if flip:
        if flip_index is None:
            raise ValueError("flip needs the keypoint set's flip_index")
        out = out[flip_index]
    return out


def crop_visibility(keypoints_in: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """OFF's rule (RSN_SPEC 10.1): visibility 0 for joints outside [0, W−1]×[0, H−1] of the input; (K,) float32."""
    x, y, v = keypoints_in[:, 0], keypoints_in[:, 1], keypoints_in[:, 2]
    inside = (x >= 0) & (x <= input_size[0] - 1) & (y >= 0) & (y <= input_size[1] - 1)
    return np.where(inside, v, 0.0).astype(np.float32)
