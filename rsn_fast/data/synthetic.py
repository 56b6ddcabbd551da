"""A synthetic COCO-format keypoint data set: articulated stick figures on textured backgrounds.

``python -m rsn_fast.data.synthetic --out DIR --train N --val M --seed S`` writes

* ``DIR/images/{train,val}_NNNNNN.jpg``
* ``DIR/annotations/person_keypoints_{train,val}.json`` (COCO keypoints format, the person category with its
  17 names and skeleton; visibility 0/1/2 true to the drawing; keypoints outside the image are 0,0,0)
* ``DIR/detections_val.json`` (COCO results format: jittered ground-truth boxes with scores, a few misses and
  some false positives)

Figures face the camera (so a person's left side is on the image's right, which survives flip augmentation),
with COCO-like proportions, random limb angles, scale, in-plane rotation, colours and thickness; several per
image, drawn back to front so later figures and random occluders hide joints (v = 1), some partly outside the
frame. Everything is a function of (seed, split, index), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import cv2
import numpy as np

from rsn_fast.data.keypoints import COCO

__all__ = ["generate", "main", "draw_image"]

# Lengths as fractions of the body height (roughly COCO-average adult proportions).
_P = {
    "head_r": 0.062,
    "neck_nose": 0.085,
    "shoulder_half": 0.115,
    "torso": 0.30,
    "hip_half": 0.08,
    "upper_arm": 0.17,
    "forearm": 0.155,
    "thigh": 0.235,
    "shin": 0.235,
}
_SPLIT_CODE = {"train": 1, "val": 2}


def _dir(angle: float) -> np.ndarray:
    """Unit vector for an angle measured from image 'down' (+y), counter-clockwise towards +x."""
    return np.array([math.sin(angle), math.cos(angle)])


def _pose(rng: np.random.Generator, height: float, root: np.ndarray, difficulty: int) -> tuple:
    """(17, 2) COCO keypoints of one frontal figure with its hip center at ``root``."""
    p = {k: v * height for k, v in _P.items()}
    tilt_sd = (0.12, 0.25, 0.45)[difficulty]
    lean = rng.normal(0.0, tilt_sd)  # whole-body in-plane rotation
    up = -_dir(lean)  # from hips to neck
    right = np.array([-up[1], up[0]])  # the figure's left side, on the image's right (frontal view)
    kp = np.zeros((17, 2))
    neck = root + up * p["torso"]
    kp[5] = neck + right * p["shoulder_half"]  # left shoulder
    kp[6] = neck - right * p["shoulder_half"]
    kp[11] = root + right * p["hip_half"]
    kp[12] = root - right * p["hip_half"]
    yaw = rng.uniform(-1.0, 1.0)
    head_c = neck + up * (p["neck_nose"] + 0.2 * p["head_r"])
    kp[0] = head_c - up * 0.25 * p["head_r"] + right * yaw * 0.35 * p["head_r"]  # nose
    for side, (eye, ear) in ((1.0, (1, 3)), (-1.0, (2, 4))):
        kp[eye] = kp[0] + up * 0.35 * p["head_r"] + right * side * 0.38 * p["head_r"]
        kp[ear] = head_c + right * side * p["head_r"] * (0.95 - 0.25 * side * yaw)
    arm_range = (1.2, 2.2, 2.9)[difficulty]
    for side, (sh, el, wr) in ((1.0, (5, 7, 9)), (-1.0, (6, 8, 10))):
        a1 = lean + side * rng.uniform(-0.3, arm_range)  # abduction, outward for each side
        bend = side * rng.uniform(-0.4, 2.4)
        kp[el] = kp[sh] + _dir(a1) * p["upper_arm"]
        kp[wr] = kp[el] + _dir(a1 + bend) * p["forearm"]
    leg_range = (0.4, 0.7, 1.1)[difficulty]
    for side, (hp, kn, an) in ((1.0, (11, 13, 15)), (-1.0, (12, 14, 16))):
        a1 = lean + side * rng.uniform(-0.15, leg_range)
        bend = side * rng.uniform(-1.2, 0.3)
        kp[kn] = kp[hp] + _dir(a1) * p["thigh"]
        kp[an] = kp[kn] + _dir(a1 + bend) * p["shin"]
    return kp, head_c, p["head_r"]


def _background(rng: np.random.Generator, w: int, h: int, difficulty: int) -> np.ndarray:
    small = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 5 + 4 * difficulty))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(
                img, (x, y), (x + int(rng.integers(5, w // 2)), y + int(rng.integers(5, h // 2))), color, -1
            )
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(3, h // 4)), color, -1)
        else:
            # Stroke-like clutter: the hard negatives that look a bit like limbs.
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(img, (x, y), (x2, y2), color, int(rng.integers(1, 3 + 2 * difficulty)))
    noise = rng.normal(0.0, 6.0 + 4.0 * difficulty, size=img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _draw_figure(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, kp, head_c, head_r, height):
    skin = tuple(int(c) for c in rng.integers(60, 256, 3))
    cloth = tuple(int(c) for c in rng.integers(0, 256, 3))
    pants = tuple(int(c) for c in rng.integers(0, 256, 3))
    limb = max(2, int(round(height * rng.uniform(0.035, 0.06))))
    pt = lambda i: (int(round(kp[i, 0])), int(round(kp[i, 1])))  # noqa: E731
    targets = ((img, None), (mask, 255))
    for canvas, fill in targets:

        def c(col, fill=fill):
            return fill if fill is not None else col

        for a, b in ((11, 13), (13, 15), (12, 14), (14, 16)):
            cv2.line(canvas, pt(a), pt(b), c(pants), limb + 1, cv2.LINE_AA)
        torso = np.array([pt(5), pt(6), pt(12), pt(11)], dtype=np.int32)
        cv2.fillConvexPoly(canvas, torso, c(cloth), cv2.LINE_AA)
        for a, b in ((5, 7), (7, 9), (6, 8), (8, 10)):
            cv2.line(canvas, pt(a), pt(b), c(skin), limb, cv2.LINE_AA)
        for i in (9, 10, 15, 16):  # hands and feet as small blobs so the end joints have a visible cue
            cv2.circle(canvas, pt(i), max(2, limb // 2 + 1), c(skin), -1, cv2.LINE_AA)
        cv2.circle(
            canvas,
            (int(round(head_c[0])), int(round(head_c[1]))),
            int(round(head_r)),
            c(skin),
            -1,
            cv2.LINE_AA,
        )
        for i in (3, 4):
            cv2.circle(canvas, pt(i), max(1, int(head_r * 0.22)), c(skin), -1, cv2.LINE_AA)
    dark = tuple(int(v * 0.3) for v in skin)
    for i in (1, 2):
        cv2.circle(img, pt(i), max(1, int(head_r * 0.14)), dark, -1, cv2.LINE_AA)
    cv2.circle(img, pt(0), max(1, int(head_r * 0.12)), (0, 0, 200), -1, cv2.LINE_AA)


def draw_image(rng: np.random.Generator, width: int, height: int, persons: int, difficulty: int) -> tuple:
    """One image and its persons: (BGR uint8 image, list of (keypoints (17, 3), bbox, area))."""
    img = _background(rng, width, height, difficulty)
    figures = []
    for _ in range(persons):
        for _attempt in range(20):
            body_h = height * rng.uniform(0.45, 0.95)
            root = np.array(
                [rng.uniform(0.05, 0.95) * width, rng.uniform(0.35, 0.75) * height + 0.1 * body_h]
            )
            kp, head_c, head_r = _pose(rng, body_h, root, difficulty)
            inside = (kp[:, 0] >= 0) & (kp[:, 0] <= width - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= height - 1)
            if inside.sum() >= 4:
                break
        mask = np.zeros((height, width), dtype=np.uint8)
        _draw_figure(img, mask, rng, kp, head_c, head_r, body_h)
        figures.append([kp, mask, inside])
    occluders = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.poisson(0.4 + 0.4 * difficulty))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        ow, oh = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
        for canvas, col in ((img, color), (occluders, 255)):
            cv2.rectangle(canvas, (x, y), (x + ow, y + oh), col, -1)
    persons_out = []
    for i, (kp, mask, inside) in enumerate(figures):
        cover = occluders.copy()
        for _, later, _ in figures[i + 1 :]:
            cover = np.maximum(cover, later)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        visible_area = int(((mask > 0) & (cover == 0)).sum())
        out = np.zeros((17, 3))
        for j in range(17):
            if not inside[j]:
                continue
            xi, yi = int(round(kp[j, 0])), int(round(kp[j, 1]))
            xi, yi = min(max(xi, 0), width - 1), min(max(yi, 0), height - 1)
            out[j] = (kp[j, 0], kp[j, 1], 1 if cover[yi, xi] else 2)
        if (out[:, 2] > 0).sum() == 0 or visible_area == 0:
            continue
        persons_out.append((out, [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], float(visible_area)))
    return img, persons_out


def _categories() -> list[dict]:
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(COCO.names),
            "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
        }
    ]


def _r(v: float) -> float:
    return round(float(v), 2)


def generate(
    out: str,
    num_train: int,
    num_val: int,
    seed: int = 0,
    width: int = 256,
    height: int = 192,
    min_persons: int = 1,
    max_persons: int = 3,
    difficulty: int = 1,
    quality: int = 90,
) -> dict[str, str]:
    """Write the data set under ``out`` and return the paths of the three json files."""
    if not 0 <= difficulty <= 2:
        raise ValueError("difficulty must be 0, 1 or 2")
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    paths = {}
    dets: list[dict] = []
    for split, count in (("train", num_train), ("val", num_val)):
        images, anns = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
            n = int(rng.integers(min_persons, max_persons + 1))
            img, persons = draw_image(rng, width, height, n, difficulty)
            image_id = (0 if split == "train" else 1_000_000) + i + 1
            name = f"{split}_{i + 1:06d}.jpg"
            cv2.imwrite(os.path.join(out, "images", name), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            images.append({"id": image_id, "file_name": name, "width": width, "height": height})
            for kp, bbox, area in persons:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "iscrowd": 0,
                        "bbox": [_r(v) for v in bbox],
                        "area": _r(area),
                        "num_keypoints": int((kp[:, 2] > 0).sum()),
                        "keypoints": [_r(v) if j % 3 != 2 else int(v) for j, v in enumerate(kp.ravel())],
                    }
                )
                if split == "val" and rng.random() < 0.95:
                    x, y, w, h = bbox
                    cx = x + w / 2 + rng.normal(0, 0.05) * w
                    cy = y + h / 2 + rng.normal(0, 0.05) * h
                    w, h = w * math.exp(rng.normal(0, 0.08)), h * math.exp(rng.normal(0, 0.08))
                    score = float(
                        np.clip(rng.uniform(0.6, 1.0) - 0.2 * rng.random() * (kp[:, 2] == 1).mean(), 0, 1)
                    )
                    dets.append(
                        {
                            "image_id": image_id,
                            "category_id": 1,
                            "bbox": [_r(cx - w / 2), _r(cy - h / 2), _r(w), _r(h)],
                            "score": round(score, 4),
                        }
                    )
            if split == "val":
                for _ in range(int(rng.poisson(0.3))):
                    w, h = rng.uniform(0.1, 0.4) * width, rng.uniform(0.2, 0.6) * height
                    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                    dets.append(
                        {
                            "image_id": image_id,
                            "category_id": 1,
                            "bbox": [_r(x), _r(y), _r(w), _r(h)],
                            "score": round(float(rng.uniform(0.05, 0.45)), 4),
                        }
                    )
        data = {
            "info": {"description": f"rsn_fast synthetic keypoints ({split}, seed {seed})", "version": "1.0"},
            "images": images,
            "annotations": anns,
            "categories": _categories(),
        }
        paths[split] = os.path.join(out, "annotations", f"person_keypoints_{split}.json")
        with open(paths[split], "w") as f:
            json.dump(data, f, separators=(",", ":"))
    paths["dets"] = os.path.join(out, "detections_val.json")
    with open(paths["dets"], "w") as f:
        json.dump(dets, f, separators=(",", ":"))
    return paths


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=256, help="canvas width")
    ap.add_argument("--height", type=int, default=192, help="canvas height")
    ap.add_argument("--min-persons", type=int, default=1)
    ap.add_argument("--max-persons", type=int, default=3)
    ap.add_argument("--difficulty", type=int, default=1, choices=(0, 1, 2), help="0 easy, 1 normal, 2 hard")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    a = ap.parse_args(argv)
    paths = generate(
        a.out,
        a.train,
        a.val,
        a.seed,
        a.width,
        a.height,
        a.min_persons,
        a.max_persons,
        a.difficulty,
        a.quality,
    )
    for k, v in paths.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
