"""Draw predicted skeletons from a COCO results file onto the images.

    python -m rsn_fast.tools.visualize --results R.json --images DIR --out DIR2 [--ann ANN.json]
        [--score-thr 0.3] [--person-thr 0.0] [--keypoint-set coco|mpii] [--ext jpg|png]

Limbs and joints are coloured by side (left, right, centre, from the keypoint names); joints whose score is below
``--score-thr`` and limbs touching them are not drawn. Without ``--ann`` an image id maps to a file in DIR whose
stem is that integer (``000000000139.jpg`` or ``139.png``); with ``--ann`` the COCO ``file_name`` is used.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Sequence

import cv2
import numpy as np

# BGR
SIDE_COLORS = {"left": (255, 128, 0), "right": (0, 128, 255), "centre": (0, 220, 0)}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def side_of(name: str) -> str:
    n = name.lower()
    if n.startswith(("left", "l_")):
        return "left"
    if n.startswith(("right", "r_")):
        return "right"
    return "centre"


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    names: Sequence[str],
    score_thr: float = 0.3,
) -> np.ndarray:
    """Draw one pose in place.

    Args:
        image: (H, W, 3) uint8 BGR image.
        keypoints: (K, 3) x, y, score in image pixels.
        skeleton: 0-based limbs.
        names: K keypoint names (their prefix gives the side).
        score_thr: joints with a lower score are skipped.
    Returns:
        the same image.
    """
    scale = max(1, round(max(image.shape[:2]) / 400))
    sides = [side_of(n) for n in names]
    ok = keypoints[:, 2] >= score_thr
    pts = [(int(round(x)), int(round(y))) for x, y in keypoints[:, :2]]
    for i, j in skeleton:
        if ok[i] and ok[j]:
            side = sides[i] if sides[i] == sides[j] else "centre"
            cv2.line(image, pts[i], pts[j], SIDE_COLORS[side], 2 * scale, cv2.LINE_AA)
    for k in np.flatnonzero(ok):
        cv2.circle(image, pts[k], 3 * scale, SIDE_COLORS[sides[k]], -1, cv2.LINE_AA)
    return image


def _image_paths(images_dir: str, ann: str | None) -> dict[int, str]:
    if ann:
        with open(ann) as f:
            data = json.load(f)
        return {int(im["id"]): os.path.join(images_dir, im["file_name"]) for im in data["images"]}
    out = {}
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTS and stem.isdigit():
            out.setdefault(int(stem), os.path.join(images_dir, name))
    return out


def visualize(
    results: str | Sequence[dict],
    images_dir: str,
    out_dir: str,
    ann: str | None = None,
    score_thr: float = 0.3,
    person_thr: float = 0.0,
    keypoint_set: str = "coco",
    ext: str | None = None,
) -> list[str]:
    """Draw every result on its image and write one file per image into ``out_dir``.

    Args:
        results: COCO results list or its JSON path.
        images_dir: folder of the images.
        out_dir: output folder (created).
        ann: optional COCO annotation file for image file names.
        score_thr: keypoint score threshold.
        person_thr: persons with a lower score are skipped.
        keypoint_set: builtin keypoint set name ("coco", "mpii").
        ext: output extension ("jpg", "png"); None keeps the input's.
    Returns:
        written paths.
    """
    from rsn_fast.data.keypoints import builtin_keypoint_sets

    sets = builtin_keypoint_sets()
    if keypoint_set not in sets:
        raise ValueError(f"unknown keypoint set {keypoint_set!r}; choose one of {sorted(sets)}")
    kset = sets[keypoint_set]
    if isinstance(results, (str, os.PathLike)):
        with open(results) as f:
            results = json.load(f)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("score", 1.0) >= person_thr:
            by_image[int(r["image_id"])].append(r)
    paths = _image_paths(images_dir, ann)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for img_id, rs in sorted(by_image.items()):
        src = paths.get(img_id)
        if src is None:
            raise FileNotFoundError(f"no image for image_id {img_id} in {images_dir}")
        image = cv2.imread(src, cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read image {src}")
        for r in sorted(rs, key=lambda r: r.get("score", 0.0)):
            kps = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
            if kps.shape[0] != kset.num_keypoints:
                raise ValueError(
                    f"result has {kps.shape[0]} keypoints, set {kset.name!r} has {kset.num_keypoints}"
                )
            draw_pose(image, kps, kset.skeleton, kset.names, score_thr)
        stem, in_ext = os.path.splitext(os.path.basename(src))
        dst = os.path.join(out_dir, stem + ("." + ext.lstrip(".") if ext else in_ext))
        if not cv2.imwrite(dst, image):
            raise OSError(f"cannot write {dst}")
        written.append(dst)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="COCO keypoint results JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ann", default=None, help="COCO annotations (image file names)")
    p.add_argument("--score-thr", type=float, default=0.3, help="keypoint score threshold")
    p.add_argument("--person-thr", type=float, default=0.0, help="person score threshold")
    p.add_argument("--keypoint-set", default="coco", help="builtin keypoint set: coco | mpii")
    p.add_argument(
        "--ext", default=None, choices=[None, "jpg", "png"], help="output format (default: input's)"
    )
    a = p.parse_args(argv)
    written = visualize(a.results, a.images, a.out, a.ann, a.score_thr, a.person_thr, a.keypoint_set, a.ext)
    print(f"wrote {len(written)} images to {a.out}")


if __name__ == "__main__":
    main()
