"""Pose estimation on images, folders and videos: ``python -m rsn_fast.predict``.

    python -m rsn_fast.predict --config C --checkpoint P INPUT... [--boxes dets.json] [--score-thr T]
        [--out DIR] [--draw] [--device D] [--batch-size B] [--no-flip] [--fast-cpu] [--no-progress]

INPUT: image files, folders (their images and videos, sorted by name, not recursive) and video files (read
with ``cv2.VideoCapture``, frames in order). Writes ``DIR/keypoints.json`` (default DIR: ``predictions``), COCO
keypoint results, one entry per person: ``image_id``, ``file_name`` (the input file), ``frame`` (0-based, videos
only), ``category_id`` 1, ``keypoints`` [x, y, score]*K in image pixels, ``score`` (person score), ``bbox``
(x, y, w, h). With ``--draw`` the skeletons are drawn (:func:`rsn_fast.tools.visualize.draw_pose`) into
``DIR/vis/<name>.jpg`` per image and ``DIR/vis/<name>.mp4`` per video.

Ids: an image's ``image_id`` is its file-name stem when every input image has a distinct all-digit stem (COCO
style, ``000000000139.jpg`` → 139), else its 0-based position among the input images; a video frame's is the
frame index. ``--boxes`` is a COCO detection results file (a list of ``{"image_id", "bbox": [x, y, w, h],
"score"[, "category_id", "file_name"]}``; only category 1 is used, boxes scoring below ``--score-thr`` are
dropped). An entry with ``file_name`` matches the input with that name (for a video, ``image_id`` is the
frame); one without matches an image id, or a frame when the only input is one video. Inputs without boxes use
the whole image (frame) as one box.

Inputs that are missing, unreadable or corrupt are named, counted and skipped; the run goes on. A box file
that does not match the inputs, a bad box (zero size, outside its image), a config that is not a pose model or
a checkpoint of another architecture stop the run with an error naming the file and value (exit code 2). All
outputs are written atomically (a file is complete or absent), so earlier outputs are never left truncated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class InputError(ValueError):
    """Inputs or box file that cannot be used (the message names the file and entry)."""


@dataclass
class Source:
    path: str
    kind: str  # "image" | "video"
    image_id: int = 0
    boxes: dict = field(default_factory=dict)  # image: {None: [...]}, video: {frame: [...]}


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Source], list[str]]:
    """Files and folders → sources in order, and the missing paths (named for the skip report)."""
    sources, missing = [], []
    for inp in inputs:
        if os.path.isdir(inp):
            names = sorted(os.listdir(inp))
            for n in names:
                p = os.path.join(inp, n)
                ext = os.path.splitext(n)[1].lower()
                if os.path.isfile(p) and ext in IMAGE_EXTS + VIDEO_EXTS:
                    sources.append(Source(p, "video" if ext in VIDEO_EXTS else "image"))
        elif os.path.isfile(inp):
            ext = os.path.splitext(inp)[1].lower()
            sources.append(Source(inp, "video" if ext in VIDEO_EXTS else "image"))
        else:
            missing.append(inp)
    images = [s for s in sources if s.kind == "image"]
    stems = [os.path.splitext(os.path.basename(s.path))[0] for s in images]
    numeric = all(t.isdigit() for t in stems) and len({int(t) for t in stems}) == len(stems)
    for i, (s, t) in enumerate(zip(images, stems)):
        s.image_id = int(t) if numeric else i
    return sources, missing


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def attach_boxes(sources: list[Source], dets_path: str, score_thr: float) -> int:
    """Read a COCO detection file and attach each box to its source; returns the number of boxes used.

    Raises:
        InputError: the file is missing or malformed, or an entry matches no input (index and id named).
    """
    if not os.path.isfile(dets_path):
        raise InputError(f"box file not found: {dets_path}")
    try:
        with open(dets_path) as f:
            dets = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{dets_path}: not a JSON file: {e}") from None
    if not isinstance(dets, list):
        raise InputError(f"{dets_path}: expected a list of detections (COCO results format)")
    by_name: dict[str, list[Source]] = defaultdict(list)
    for s in sources:
        by_name[os.path.basename(s.path)].append(s)
        by_name[os.path.normpath(s.path)].append(s)
    images = {s.image_id: s for s in sources if s.kind == "image"}
    videos = [s for s in sources if s.kind == "video"]
    only_video = videos[0] if len(videos) == 1 and not images else None
    used = 0
    for i, d in enumerate(dets):
        where = f"{dets_path}: entry [{i}]"
        if not isinstance(d, dict) or "bbox" not in d or ("image_id" not in d and "file_name" not in d):
            raise InputError(f"{where}: expected an object with 'image_id' (or 'file_name') and 'bbox'")
        b = d["bbox"]
        if not (isinstance(b, list) and len(b) == 4 and all(_number(v) for v in b)):
            raise InputError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {b!r}")
        score = d.get("score", 1.0)
        if not _number(score):
            raise InputError(f"{where}: 'score' must be a number, got {score!r}")
        if b[2] <= 0 or b[3] <= 0:
            raise InputError(f"{where}: box {b} has zero or negative size")
        if d.get("category_id", 1) != 1:
            continue
        if "file_name" in d:
            hits = by_name.get(os.path.normpath(str(d["file_name"]))) or by_name.get(
                os.path.basename(str(d["file_name"]))
            )
            if not hits:
                raise InputError(f"{where}: file_name {d['file_name']!r} is not among the inputs")
            src = hits[0]
        elif d["image_id"] in images:
            src = images[d["image_id"]]
        elif only_video is not None and isinstance(d["image_id"], int):
            src = only_video
        else:
            known = sorted(images)[:10]
            raise InputError(
                f"{where}: image_id {d['image_id']!r} matches no input image (ids: {known}"
                f"{', ...' if len(images) > 10 else ''}); video boxes need 'file_name' when there is "
                "more than one input"
            )
        if score < score_thr:
            continue
        key = int(d.get("frame", d.get("image_id", 0))) if src.kind == "video" else None
        src.boxes.setdefault(key, []).append([*map(float, b), float(score)])
        used += 1
    return used


def _atomic_bytes(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON atomically."""
    _atomic_bytes(path, json.dumps(obj).encode())


def _frames(src: Source) -> Iterator[tuple[int | None, object]]:
    """(frame index or None, BGR image); raises OSError naming the file when it cannot be read at all."""
    import cv2

    if src.kind == "image":
        img = cv2.imread(src.path, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot decode image: {src.path}")
        yield None, img
        return
    cap = cv2.VideoCapture(src.path)
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open video: {src.path}")
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield i, frame
            i += 1
        if i == 0:
            raise OSError(f"no decodable frame in video: {src.path}")
    finally:
        cap.release()


def _frame_count(src: Source) -> int:
    if src.kind == "image":
        return 1
    import cv2

    cap = cv2.VideoCapture(src.path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return max(n, 0)


class _Drawer:
    """Draws poses (the visualize tool's ``draw_pose``) into images or one video per source."""

    def __init__(self, out_dir: str, kset, score_thr: float):
        self.dir = os.path.join(out_dir, "vis")
        os.makedirs(self.dir, exist_ok=True)
        self.kset = kset
        self.score_thr = score_thr
        self.writer = None
        self.tmp = self.final = None
        self.used: set[str] = set()

    def _name(self, src: Source, ext: str) -> str:
        stem = os.path.splitext(os.path.basename(src.path))[0]
        name, k = stem + ext, 1
        while name in self.used:  # two inputs with one name (different folders)
            name, k = f"{stem}_{k}{ext}", k + 1
        self.used.add(name)
        return os.path.join(self.dir, name)

    def draw(self, img, people):
        import numpy as np

        from rsn_fast.tools.visualize import draw_pose

        img = img.copy()
        for p in sorted(people, key=lambda p: p.score):
            kps = np.concatenate([p.keypoints, p.keypoint_scores[:, None]], axis=1)
            draw_pose(img, kps, self.kset.skeleton, self.kset.names, self.score_thr)
        return img

    def image(self, src: Source, img, people) -> None:
        import cv2

        ok, buf = cv2.imencode(".jpg", self.draw(img, people))
        if not ok:
            raise OSError(f"cannot encode the drawing of {src.path}")
        _atomic_bytes(self._name(src, ".jpg"), buf.tobytes())

    def frame(self, src: Source, img, people, fps: float) -> None:
        import cv2

        if self.writer is None:
            self.final = self._name(src, ".mp4")
            self.tmp = os.path.join(self.dir, f".{os.path.basename(self.final)}.{os.getpid()}.tmp.mp4")
            h, w = img.shape[:2]
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, (w, h))
            if not self.writer.isOpened():
                raise OSError(f"cannot write video {self.tmp}")
        self.writer.write(self.draw(img, people))

    def end_video(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if keep:
                os.replace(self.tmp, self.final)
            elif os.path.exists(self.tmp):
                os.remove(self.tmp)
        self.writer = None


def run(args: argparse.Namespace) -> int:
    """The CLI body; returns the exit code."""
    from rsn_fast.predictor import Predictor, PredictorError, as_boxes

    sources, missing = expand_inputs(args.inputs)
    skipped = [(p, "not found") for p in missing]
    if not sources:
        print("error: no readable input: " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    if args.boxes:
        n = attach_boxes(sources, args.boxes, args.score_thr)
        print(f"{args.boxes}: {n} person boxes", file=sys.stderr)
    pred = Predictor(args.config, args.checkpoint, device=args.device, flip_test=not args.no_flip,
                     batch_size=args.batch_size, fast_cpu=args.fast_cpu)  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    drawer = _Drawer(args.out, pred.keypoint_set, args.kpt_thr) if args.draw else None
    total = sum(_frame_count(s) for s in sources)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", dynamic_ncols=True, disable=args.no_progress, mininterval=0.5)
    results: list[dict] = []
    group = max(1, min(pred.batch_size, 16))
    t0, frames = time.perf_counter(), 0
    for src in sources:
        fps = 25.0
        if src.kind == "video":
            import cv2

            cap = cv2.VideoCapture(src.path)
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            cap.release()
        ok = True
        buf: list = []  # frames of this source waiting for one predict_batch call (video frames share passes)

        def flush(src=src, fps=fps, buf=buf):
            nonlocal frames
            outs = pred.predict_batch([b[1] for b in buf], [b[2] for b in buf], score_thr=args.score_thr)
            for (frame_idx, img, _), people in zip(buf, outs):
                image_id = src.image_id if frame_idx is None else frame_idx
                for p in people:
                    r = p.to_coco(image_id)
                    r["file_name"] = src.path
                    if frame_idx is not None:
                        r["frame"] = frame_idx
                    results.append(r)
                if drawer is not None:
                    if frame_idx is None:
                        drawer.image(src, img, people)
                    else:
                        drawer.frame(src, img, people, fps)
                frames += 1
                bar.update(1)
            buf.clear()

        last_frame = -1
        try:
            for frame_idx, img in _frames(src):
                if frame_idx is not None:
                    last_frame = frame_idx
                # with a box file, an image/frame without entries has nobody to estimate; without one, the
                # whole image is the box
                boxes = src.boxes.get(frame_idx, []) if args.boxes else None
                where = src.path if frame_idx is None else f"{src.path} frame {frame_idx}"
                try:
                    boxes = as_boxes(boxes, img.shape, where="boxes")
                except PredictorError as e:
                    raise PredictorError(f"{where}: {e}") from None
                buf.append((frame_idx, img, boxes))
                if len(buf) >= group:
                    flush()
            if buf:
                flush()
            if src.kind == "video" and args.boxes:
                unused = sorted(f for f in src.boxes if f is not None and f > last_frame)
                if unused:
                    n = sum(len(src.boxes[f]) for f in unused)
                    bar.write(
                        f"warning: {src.path}: {n} box(es) for frame(s) {unused[0]}..{unused[-1]} past the "
                        f"video's last frame {last_frame} were not used (a box file for another video?)",
                        file=sys.stderr,
                    )
        except OSError as e:
            ok = False
            skipped.append((src.path, str(e)))
            bar.write(f"skipping: {e}")
        except BaseException:
            ok = False  # a half-drawn video is not kept
            raise
        finally:
            if drawer is not None:
                drawer.end_video(keep=ok)
    bar.close()
    out_json = os.path.join(args.out, "keypoints.json")
    write_json(out_json, results)
    dt = time.perf_counter() - t0
    print(f"{frames} frames, {len(results)} persons in {dt:.1f} s ({frames / max(dt, 1e-9):.1f} frames/s); "
          f"wrote {out_json}" + (f" and drawings in {drawer.dir}" if drawer else ""))  # fmt: skip
    if skipped:
        print(f"skipped {len(skipped)} input(s):", file=sys.stderr)
        for p, why in skipped:
            print(f"  {p}: {why}", file=sys.stderr)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Pose estimation on images, folders and videos with a trained RSN."
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or video files")
    p.add_argument("--config", required=True, help="YAML config of the model")
    p.add_argument("--checkpoint", required=True, help="weights: an rsn_fast checkpoint, MMPose or OFF")
    p.add_argument("--boxes", default=None, help="person boxes: COCO detection results JSON")
    p.add_argument("--score-thr", type=float, default=0.0, help="drop boxes with a lower detector score")
    p.add_argument("--out", default="predictions", help="output folder (keypoints.json, vis/)")
    p.add_argument("--draw", action="store_true", help="write images / videos with the skeletons drawn")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="--draw: skip keypoints with a lower score")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="crops per forward (default: test.batch_size)"
    )
    p.add_argument("--no-flip", action="store_true", help="no flip test (faster, slightly less accurate)")
    p.add_argument("--fast-cpu", action="store_true", help="compile for CPU inference (slow first call)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Returns 0 (done; skipped inputs are listed), 2 (bad input: named), 1 (unexpected error)."""
    args = parse_args(argv)
    from rsn_fast.models import CheckpointError
    from rsn_fast.predictor import PredictorError

    try:
        return run(args)
    except (InputError, PredictorError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
