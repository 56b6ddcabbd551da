"""``rsn_fast.Predictor``: a trained RSN on your own images, with test.py's preprocessing, flip test and decoding.

    from rsn_fast import Predictor
    predictor = Predictor("configs/rsn18_coco_256x192.yaml", "rsn18.pth")
    people = predictor("photo.jpg", boxes=[[x, y, w, h, score], ...])   # list of PersonPose

Images are file paths or NumPy arrays (H, W, 3) uint8 in **BGR** order (what ``cv2.imread`` and
``cv2.VideoCapture`` return; the data pipeline reads BGR and converts to the model's ``data.color``); pass
``color="rgb"`` for RGB arrays (PIL, imageio). Boxes are person boxes in image pixels: (N, 4) ``xywh`` (COCO)
or ``xyxy`` as ``box_format`` says, or (N, 5) with the detector's score last; None means the whole image is one
box (score 1). Each box is extended, aspect-fitted and cropped exactly as ``rsn_fast/test.py`` does
(:func:`rsn_fast.data.transforms.test_params`, :func:`~rsn_fast.data.transforms.crop_input`), and the crops go
through the same forward, flip test and decoder (:func:`rsn_fast.engine.evaluator.infer_keypoints`), so the
keypoints equal test.py's on the same boxes: bit for bit when the crops are batched as test.py batches them
(``batch_size=test.batch_size``, boxes in detection order; tested on the synthetic set), else up to float
rounding of a different batch size (about 1e-5 relative on the CPU, seen here).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Predictor", "PersonPose", "PredictorError", "load_pose_model", "read_image", "as_boxes"]


class PredictorError(ValueError):
    """Bad input to the predictor (image, boxes, config); the message names the file or value."""


@dataclass
class PersonPose:
    """One person's pose.

    Attributes:
        keypoints: (K, 2) float32 x, y in image pixels (the keypoint set's order, e.g. COCO's 17).
        keypoint_scores: (K,) float32 per-keypoint confidence (RSN: heatmap value / 255 + 0.5).
        box: (4,) float32 the person box as x, y, w, h in image pixels (converted from xyxy if given so).
        box_score: the detector's score for the box (1.0 when none was given).
        score: the person score, ``test.score_mode``'s rule (RSN: box_score × mean keypoint score).
    """

    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    box: np.ndarray
    box_score: float
    score: float

    def to_coco(self, image_id: int | str, category_id: int = 1) -> dict:
        """A COCO keypoint result: ``{"image_id", "category_id", "keypoints": [x, y, s]*K, "score"}``."""
        kps = np.concatenate([self.keypoints, self.keypoint_scores[:, None]], axis=1).reshape(-1)
        return {
            "image_id": image_id,
            "category_id": int(category_id),
            "keypoints": [round(float(v), 3) for v in kps],
            "score": float(self.score),
            "bbox": [round(float(v), 2) for v in self.box],
        }


def _pose_config(config):
    from rsn_fast.config import Config, ConfigError, load_config

    if isinstance(config, Config):
        return load_config(config)  # a copy: the predictor's overrides must not leak into the caller's
    path = os.fspath(config)
    if not os.path.isfile(path):
        raise PredictorError(f"config file not found: {path}")
    try:
        cfg = load_config(path)
        cfg.model.validate()
    except (ConfigError, ValueError) as e:
        raise PredictorError(f"{path} is not an rsn_fast pose-model config: {e}") from None
    return cfg


def load_pose_model(config, checkpoint, device: str | torch.device | None = "cpu"):
    """Build the model of ``config`` (YAML path or Config) and load ``checkpoint`` into it, eval mode.

    Returns:
        (cfg, model) with the model on ``device``.
    Raises:
        PredictorError: the config is missing or not a pose-model config.
        FileNotFoundError: no checkpoint file.
        CheckpointError: the checkpoint is of another architecture (its message lists the differing keys/shapes).
    """
    from rsn_fast.engine.checkpoint import load_model_weights
    from rsn_fast.models import build_model

    cfg = _pose_config(config)
    try:
        device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
    except RuntimeError as e:
        raise PredictorError(f"bad device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictorError(f"device {str(device)!r} asked for, but no CUDA GPU is available (use 'cpu')")
    ckpt = os.fspath(checkpoint)
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint file not found: {ckpt}")
    # model.fused=auto fuses for a CUDA device only, so the builder needs the device
    model = build_model(cfg, device=device)
    load_model_weights(model, ckpt, cfg=cfg)
    return cfg, model.to(device).eval()


def read_image(image, color: str = "bgr") -> np.ndarray:
    """A path or an array → (H, W, 3) uint8 BGR. Raises PredictorError naming the file or the bad shape/dtype."""
    import cv2

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise PredictorError(f"image file not found: {path}")
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise PredictorError(f"cannot decode image: {path}")
        return img
    if not isinstance(image, np.ndarray):
        raise PredictorError(f"image must be a path or a NumPy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise PredictorError(f"image array must be uint8 (0..255), got {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise PredictorError(f"image array must be (H, W, 3), got shape {image.shape}")
    if color not in ("bgr", "rgb"):
        raise PredictorError(f"color must be 'bgr' or 'rgb', got {color!r}")
    return np.ascontiguousarray(image[..., ::-1] if color == "rgb" else image)


def as_boxes(boxes, image_shape: Sequence[int], box_format: str = "xywh", where: str = "boxes") -> np.ndarray:
    """(N, 4|5) boxes (or None: the whole image) → (N, 5) float64 x, y, w, h, score.

    Raises:
        PredictorError: wrong shape, non-finite values, zero or negative size, or a box entirely outside the
            image; the message names the box index and its values.
    """
    h_img, w_img = int(image_shape[0]), int(image_shape[1])
    if box_format not in ("xywh", "xyxy"):
        raise PredictorError(f"box_format must be 'xywh' or 'xyxy', got {box_format!r}")
    if boxes is None:
        return np.array([[0.0, 0.0, w_img, h_img, 1.0]])
    try:
        b = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PredictorError(f"{where} must be (N, 4) or (N, 5) numbers (x, y, w, h[, score]): {e}") from None
    if b.size == 0:
        return np.zeros((0, 5))
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] not in (4, 5):
        raise PredictorError(f"{where} must be (N, 4) or (N, 5) (x, y, w, h[, score]), got shape {b.shape}")
    if b.shape[1] == 4:
        b = np.concatenate([b, np.ones((len(b), 1))], axis=1)
    b = b.copy()
    if box_format == "xyxy":
        b[:, 2:4] -= b[:, 0:2]
    for i, (x, y, w, h, _) in enumerate(b):
        if not np.all(np.isfinite(b[i])):
            raise PredictorError(f"{where}[{i}] has a non-finite value: {b[i].tolist()}")
        if w <= 0 or h <= 0:
            raise PredictorError(f"{where}[{i}] has zero or negative size (w={w:g}, h={h:g}, {box_format})")
        if x >= w_img or y >= h_img or x + w <= 0 or y + h <= 0:
            raise PredictorError(
                f"{where}[{i}] = (x={x:g}, y={y:g}, w={w:g}, h={h:g}) lies outside the {w_img}x{h_img} image"
            )
    return b


class Predictor:
    """Top-down pose estimation with a trained RSN.

    Args:
        config: YAML config path or :class:`rsn_fast.config.Config` of the model (its ``data`` section gives
            the colour order, mean/std and test box extension; ``test`` the decoder and score rule).
        checkpoint: weights in any format ``rsn_fast.models.load_checkpoint`` reads (ours, MMPose 0.x/1.x,
            official RSN).
        device: "cpu", "cuda", "cuda:1", ...; None picks CUDA when available. On a GPU the model runs the path
            ``build_model`` chose (the fused eval kernels where built).
        flip_test: average with the mirrored input's heatmaps (test.py's ``test.flip``).
        decode_mode: "rsn" | "megvii" | "standard" | "dark"; None keeps the config's ``test.decode_mode``.
        batch_size: crops per forward pass; None keeps ``test.batch_size``.
        fast_cpu: on CPU, run :func:`rsn_fast.nn.compile_for_cpu_inference` (fused, BN-folded RSBs, inductor
            freezing). The first call compiles: measured 143 s for RSN-18 at 96×64, batch 8, on a 2-core CPU
            shared with other jobs (``compile_for_cpu_inference`` states about 30 s for RSN-18 on an idle one);
            afterwards every forward has the same batch size (the last batch is padded), so nothing
            recompiles. Worth it for long runs (videos, folders), not for a few images.
        color: colour order of array images, "bgr" (OpenCV) or "rgb".

    Raises:
        PredictorError: bad config; FileNotFoundError / CheckpointError: missing or mismatched checkpoint.
    """

    def __init__(
        self,
        config,
        checkpoint,
        device: str | torch.device | None = None,
        flip_test: bool = True,
        decode_mode: str | None = None,
        batch_size: int | None = None,
        fast_cpu: bool = False,
        color: str = "bgr",
    ):
        from rsn_fast.data.keypoints import get_keypoint_set
        from rsn_fast.engine.evaluator import _flip_pairs

        cfg, model = load_pose_model(config, checkpoint, device)
        cfg = copy.deepcopy(cfg)
        cfg.test.flip = bool(flip_test)
        if decode_mode is not None:
            cfg.test.decode_mode = decode_mode
        if batch_size is not None:
            cfg.test.batch_size = int(batch_size)
        cfg.test.validate()
        if color not in ("bgr", "rgb"):
            raise PredictorError(f"color must be 'bgr' or 'rgb', got {color!r}")
        self.cfg = cfg
        self.color = color
        self.device = next(model.parameters()).device
        self.keypoint_set = get_keypoint_set(cfg.data)
        self.input_size = tuple(int(v) for v in cfg.model.input_size)
        mean, std = cfg.data.resolved_mean_std()
        self._mean = np.asarray(mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(std, dtype=np.float32)
        self._flip_pairs = _flip_pairs(cfg) if cfg.test.flip else None
        self.fast_cpu = bool(fast_cpu) and self.device.type == "cpu"
        if self.fast_cpu:
            from rsn_fast.nn import compile_for_cpu_inference

            self._mem = torch.channels_last
            self.model = compile_for_cpu_inference(model)
        else:
            self._mem = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
            self.model = model.to(memory_format=self._mem)
        self.last_timing: dict[str, float] = {}

    @property
    def batch_size(self) -> int:
        return int(self.cfg.test.batch_size)

    def __call__(
        self, image, boxes=None, box_format: str = "xywh", score_thr: float = 0.0
    ) -> list[PersonPose]:
        """Poses in one image (path or (H, W, 3) uint8 array); see :meth:`predict_batch`."""
        return self.predict_batch([image], [boxes], box_format, score_thr)[0]

    def predict_batch(
        self,
        images: Sequence,
        boxes: Sequence | None = None,
        box_format: str = "xywh",
        score_thr: float = 0.0,
    ) -> list[list[PersonPose]]:
        """Poses in many images; crops of all images share forward passes of ``batch_size``.

        Args:
            images: paths or (H, W, 3) uint8 arrays (``color`` order).
            boxes: one entry per image: (N, 4) / (N, 5) array-like in ``box_format`` (score last), or None
                for the whole image; None for all whole images.
            box_format: "xywh" (COCO) or "xyxy".
            score_thr: boxes with a lower detector score are dropped.
        Returns:
            one list of :class:`PersonPose` per image, in box order.
        Raises:
            PredictorError: an unreadable image or a bad box (naming which).
        """
        from rsn_fast.data import transforms as T

        if boxes is None:
            boxes = [None] * len(images)
        if len(boxes) != len(images):
            raise PredictorError(f"got {len(images)} images but {len(boxes)} box entries")
        crops, centers, sizes, owners, kept = [], [], [], [], []
        t0 = time.perf_counter()
        for i, (image, bx) in enumerate(zip(images, boxes)):
            name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {i}"
            img = read_image(image, self.color)
            b = as_boxes(bx, img.shape, box_format, where=f"boxes of {name}")
            b = b[b[:, 4] >= score_thr]
            for row in b:
                p = T.test_params(self.cfg.data, row[:4], self.input_size)
                crop, _ = T.crop_input(
                    img, p, self.input_size, self.cfg.data.color, self._mean, self._inv_std
                )
                crops.append(crop)
                # float32 as the data set's meta tensors, so the decoder sees the same numbers as in test.py
                centers.append(np.asarray(p.center, dtype=np.float32))
                sizes.append(np.asarray(p.size, dtype=np.float32))
                owners.append(i)
                kept.append(row)
        t1 = time.perf_counter()
        coords, scores = self._infer(crops, centers, sizes)
        t2 = time.perf_counter()
        self.last_timing = {"preprocess_s": t1 - t0, "model_s": t2 - t1, "crops": float(len(crops))}
        return self._assemble(len(images), owners, kept, coords, scores)

    @torch.no_grad()
    def _infer(self, crops, centers, sizes) -> tuple[np.ndarray, np.ndarray]:
        from rsn_fast.engine.evaluator import infer_keypoints

        k = self.keypoint_set.num_keypoints
        if not crops:
            return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
        out_c, out_s = [], []
        bs = self.batch_size
        for s in range(0, len(crops), bs):
            img = torch.from_numpy(np.stack(crops[s : s + bs]))
            c = torch.from_numpy(np.stack(centers[s : s + bs]))
            z = torch.from_numpy(np.stack(sizes[s : s + bs]))
            n = img.shape[0]
            if self.fast_cpu and n < bs:  # one input shape for the compiled model: pad, then drop the padding
                pad = bs - n
                img = torch.cat([img, img[-1:].expand(pad, -1, -1, -1)])
                c, z = torch.cat([c, c[-1:].expand(pad, -1)]), torch.cat([z, z[-1:].expand(pad, -1)])
            img = img.to(self.device).contiguous(memory_format=self._mem)
            coords, scores = infer_keypoints(self.model, img, c, z, self.cfg, self._flip_pairs)
            out_c.append(coords[:n].float().cpu().numpy())
            out_s.append(scores[:n].float().cpu().numpy())
        return np.concatenate(out_c), np.concatenate(out_s)

    def _assemble(self, n_images, owners, kept, coords, scores) -> list[list[PersonPose]]:
        from rsn_fast.evaluation.coco import person_scores

        box_scores = np.asarray([r[4] for r in kept], dtype=np.float32)
        t = self.cfg.test
        ps = person_scores(scores, box_scores, t.score_mode, t.keypoint_score_thr) if kept else []
        out: list[list[PersonPose]] = [[] for _ in range(n_images)]
        for j, i in enumerate(owners):
            out[i].append(
                PersonPose(
                    keypoints=coords[j],
                    keypoint_scores=scores[j],
                    box=np.asarray(kept[j][:4], dtype=np.float32),
                    box_score=float(box_scores[j]),
                    score=float(ps[j]),
                )
            )
        return out
