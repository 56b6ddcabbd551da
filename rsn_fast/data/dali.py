"""NVIDIA DALI twin of the torch data pipeline (``data.backend: dali``).

The split of work is the torch pipeline's (:mod:`rsn_fast.data.transforms`): the Python side reads the encoded
file bytes and draws each sample's augmentation with the very same sampler (``TopDownDataset.params``), builds
the same (2, 3) matrix with :func:`~rsn_fast.data.transforms.affine_matrix` and moves the keypoints through it
in NumPy. DALI only does the pixel work: decode (``fn.decoders.image``, ``device="mixed"`` on a GPU, ``"cpu"``
otherwise), the affine crop (``fn.warp_affine``, bilinear, zero fill: cv2's ``BORDER_CONSTANT``), normalisation
and the output dtype/layout (``fn.crop_mirror_normalize``). The flip is part of the matrix, as in the torch
pipeline. Target heatmaps come from :func:`rsn_fast.ops.megvii_targets` on the output device.

The GPU and CPU pipelines are one graph; only the device strings differ (``device_id=None`` and CPU operators
for ``data.dali.device: cpu``, which is what CI tests). The GPU path has not been run here (no GPU with DALI).

Matrix convention: cv2 maps source → output with pixel centres at integers. DALI's ``warp_affine`` with
``inverse_map=True`` takes the output → source map in coordinates where (0, 0) is the *corner* of the first
pixel (centres at +0.5). :func:`dali_matrix` converts, inverting in float64 so DALI never inverts in float32.

Data order and sharding: any sampler of indices or of ``(epoch, index)`` keys. :func:`rsn_fast.data.loaders.build_dali_loader` uses
the samplers of :func:`rsn_fast.data.build_dataloader` (``DistributedSampler`` with rank = ``shard_id`` and world
size = ``num_shards`` under DDP, drop of the last partial batch in training, kept in validation); the engine
can pass its own resumable sampler plus ``seed_fn(epoch, index)`` (the per-sample seed of its
``SeededDataset``), so a sample gets the same augmentation from either backend.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cv2
import numpy as np
import torch

from rsn_fast.data import transforms as T
from rsn_fast.data.image_io import ImageReadError, read_encoded
from rsn_fast.ops.megvii_targets import megvii_targets

logger = logging.getLogger(__name__)

__all__ = [
    "DALI_INSTALL_HINT",
    "DaliNotInstalledError",
    "DaliLoader",
    "dali_available",
    "dali_matrix",
    "image_size",
]

DALI_INSTALL_HINT = (
    "pip install nvidia-dali-cuda130 (CUDA 13; nvidia-dali-cuda120 for CUDA 12), or pip install '.[dali]'; "
    "the bare 'nvidia-dali' package on PyPI is only a placeholder"
)


class DaliNotInstalledError(ImportError):
    """``data.backend: dali`` was asked for but NVIDIA DALI cannot be imported."""


def dali_available() -> bool:
    """Whether ``nvidia.dali`` imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _import_dali() -> tuple[Any, Any, Any]:
    try:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def
    except ImportError as e:
        raise DaliNotInstalledError(f"data.backend: dali needs NVIDIA DALI ({e}): {DALI_INSTALL_HINT}") from e
    return fn, types, pipeline_def


def dali_matrix(matrix: np.ndarray) -> np.ndarray:
    """cv2 source→output matrix (integer pixel centres) → DALI output→source matrix (corner origin), (2, 3) f32.

    With s, d the corner-origin coordinates (cv2's + 0.5): d − ½ = A (s − ½) + t, so
    s = A⁻¹ (d − ½ − t) + ½.
    """
    a = np.asarray(matrix, dtype=np.float64)[:, :2]
    t = np.asarray(matrix, dtype=np.float64)[:, 2]
    ai = np.linalg.inv(a)
    ti = ai @ (-0.5 - t) + 0.5
    return np.concatenate([ai, ti[:, None]], axis=1).astype(np.float32)


def image_size(buf: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG/PNG header without decoding (other formats: a cv2 decode); None if unreadable."""
    b = bytes(buf[:65536]) if isinstance(buf, np.ndarray) else buf
    if b[:2] == b"\xff\xd8":
        i, n = 2, len(b)
        while i + 9 < n:
            if b[i] != 0xFF:
                return None
            code = b[i + 1]
            if code == 0xFF:  # fill byte
                i += 1
                continue
            if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(b[i + 7 : i + 9], "big"), int.from_bytes(b[i + 5 : i + 7], "big")
            i += 2 + int.from_bytes(b[i + 2 : i + 4], "big")
        if not isinstance(buf, np.ndarray) or len(buf) <= 65536:
            return None
    elif b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else (img.shape[1], img.shape[0])


class _BatchSource:
    """The DALI ``external_source`` callback: one batch of (encoded bytes, DALI matrices) per call.

    Everything that is not pixel work (keypoints, weights, meta) goes into ``side`` in call order; DALI calls
    the source once per iteration, in order, so the i-th pipeline output belongs to the i-th ``side`` entry.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        seed_fn: Callable[[int, int], int] | None,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed_fn = seed_fn
        self.side: collections.deque = collections.deque()
        self.keys: Iterator = iter(())

    def start(self, keys: Iterable) -> None:
        self.keys = iter(keys)
        self.side.clear()

    def _read(self, index: int) -> tuple[int, np.ndarray, int, int]:
        """(record index actually used, bytes, image width, substitutes taken) under ``data.bad_images``."""
        ds = self.dataset
        skipped = 0
        for attempt in range(len(ds.records)):
            i = (index + attempt) % len(ds.records)
            path = ds.records[i]["image_file"]
            try:
                buf = read_encoded(path)  # missing, empty and truncated files are named here
                size = image_size(buf)
                if size is None:
                    raise ImageReadError(f"cannot decode image: {path}")
            except ImageReadError as e:
                if ds.data_cfg.bad_images == "error":
                    raise
                skipped += 1
                logger.warning("skipping: %s", e)
                if skipped >= 20:
                    raise ImageReadError(f"{skipped} unreadable images in a row, last: {e}") from None
                continue
            return i, buf, size[0], skipped
        raise ImageReadError("no readable image in the dataset")

    def _sample(self, key: Any) -> dict:
        ds = self.dataset
        if isinstance(key, (tuple, list)):
            epoch, index = int(key[0]), int(key[1])
            if self.seed_fn is not None:
                ds.set_rng(self.seed_fn(epoch, index))
        else:
            index = int(key)
        i, buf, width, skipped = self._read(index)
        rec = ds.records[i]
        p = ds.params(i, width)
        m = T.affine_matrix(p, ds.input_size, width)
        kp = T.transform_keypoints(rec["keypoints"], m, p.flip, ds.flip_index)
        meta = {
            "image_id": rec["image_id"],
            "center": p.center,
            "box_size": p.size,
            "rotation": p.rotation,
            "flipped": p.flip,
            "score": rec["score"],
            "index": i,
        }
        if "head_size" in rec:
            meta["head_size"] = rec["head_size"]
        return {
            "bytes": buf,
            "matrix": dali_matrix(m),
            "keypoints": kp[:, :2].astype(np.float32),
            "target_weight": T.crop_visibility(kp, ds.input_size),
            "meta": meta,
            "skipped": int(skipped > 0),
        }

    def __call__(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        items = []
        for key in self.keys:
            items.append(self._sample(key))
            if len(items) == self.batch_size:
                break
        if not items or (self.drop_last and len(items) < self.batch_size):
            raise StopIteration
        self.side.append(
            {
                "keypoints": np.stack([it["keypoints"] for it in items]),
                "target_weight": np.stack([it["target_weight"] for it in items]),
                "meta": [it["meta"] for it in items],
                "skipped": sum(it["skipped"] for it in items),
            }
        )
        return [it["bytes"] for it in items], [it["matrix"] for it in items]


_META_DTYPES = {
    "image_id": torch.int64,
    "center": torch.float32,
    "box_size": torch.float32,
    "rotation": torch.float32,
    "flipped": torch.bool,
    "score": torch.float32,
    "index": torch.int64,
    "head_size": torch.float32,
}


class DaliLoader:
    """Iterable of batch dicts (the data contract) produced by a DALI pipeline fed from ``sampler``.

    Args:
        dataset: the records, keypoint set and augmentation sampler (``TopDownDataset``; no pixels read by it).
        sampler: yields dataset indices or ``(epoch, index)`` keys; iterated afresh by each ``iter(loader)``.
        batch_size: samples per batch.
        drop_last: drop the last partial batch (training) or yield it (validation).
        device: "gpu" (mixed decoder, GPU operators, outputs on ``cuda:device_id``) or "cpu" (``device_id=None``).
        device_id: the CUDA device for "gpu" (default: the current one).
        threads: DALI CPU worker threads.
        prefetch: DALI prefetch queue depth (batches in flight).
        dtype: "fp32" or "fp16" image output.
        layout: "nchw" or "nhwc"; the image is always shaped (N, 3, H, W), "nhwc" gives channels-last memory.
        seed_fn: with ``(epoch, index)`` keys, ``dataset.set_rng(seed_fn(epoch, index))`` before each sample's
            draw (the engine's per-sample seeding).
        targets: build ``target`` (default: for the training split).
    """

    def __init__(
        self,
        dataset: Any,
        sampler: Iterable,
        batch_size: int,
        drop_last: bool,
        device: str = "cpu",
        device_id: int | None = None,
        threads: int = 4,
        prefetch: int = 2,
        dtype: str = "fp32",
        layout: str = "nchw",
        seed_fn: Callable[[int, int], int] | None = None,
        targets: bool | None = None,
    ):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"DALI device must be 'cpu' or 'gpu', got {device!r}")
        if dtype not in ("fp32", "fp16") or layout not in ("nchw", "nhwc"):
            raise ValueError(f"DALI output must be fp32|fp16 and nchw|nhwc, got {dtype!r}, {layout!r}")
        if device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("data.dali.device: gpu needs a CUDA GPU; use data.dali.device: cpu")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = device
        self.device_id = (
            (torch.cuda.current_device() if device_id is None else device_id) if device == "gpu" else None
        )
        self.threads = threads
        self.prefetch = prefetch
        self.dtype = dtype
        self.layout = layout
        self.targets = dataset.train if targets is None else targets
        self.out_device = torch.device("cuda", self.device_id) if device == "gpu" else torch.device("cpu")
        self._source = _BatchSource(dataset, batch_size, drop_last, seed_fn)
        self._pipe: Any = None
        self._clean = False  # the pipeline finished its last epoch (reset) and can start another

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _build(self) -> None:
        fn, types, pipeline_def = _import_dali()
        ds = self.dataset
        mean, std = ds.data_cfg.resolved_mean_std()
        w, h = ds.input_size
        gpu = self.device == "gpu"
        color = types.RGB if ds.data_cfg.color == "rgb" else types.BGR
        out_dtype = types.FLOAT16 if self.dtype == "fp16" else types.FLOAT
        source = self._source

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.threads,
            device_id=self.device_id,
            prefetch_queue_depth=self.prefetch,
        )
        def graph():
            jpegs, mats = fn.external_source(
                source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.FLOAT]
            )
            # Everything below is the same graph on both devices; only the device strings differ.
            images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=color)
            crops = fn.warp_affine(
                images,
                matrix=mats,
                size=(h, w),
                fill_value=0,
                interp_type=types.INTERP_LINEAR,
                inverse_map=True,
            )
            return fn.crop_mirror_normalize(
                crops,
                dtype=out_dtype,
                output_layout="CHW" if self.layout == "nchw" else "HWC",
                mean=list(mean),
                std=list(std),
            )

        self.close()
        self._pipe = graph()
        self._pipe.build()
        self._clean = True

    def close(self) -> None:
        """Release the pipeline (threads, device memory); the next ``iter`` builds a new one."""
        if self._pipe is not None:
            del self._pipe
            self._pipe = None
        self._clean = False

    def __iter__(self) -> Iterator[dict]:
        if not self._clean:
            # First use, or the previous epoch was abandoned with batches still queued: start afresh.
            self._build()
        self._source.start(self.sampler)
        self._clean = False
        while True:
            try:
                outs = self._pipe.run()
            except StopIteration:
                break
            yield self._batch(outs[0], self._source.side.popleft())
        self._pipe.reset()
        self._clean = True

    def _batch(self, images: Any, side: dict) -> dict:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        n = len(side["meta"])
        w, h = self.dataset.input_size
        shape = (n, 3, h, w) if self.layout == "nchw" else (n, h, w, 3)
        dt = torch.float16 if self.dtype == "fp16" else torch.float32
        img = torch.empty(shape, dtype=dt, device=self.out_device)
        stream = torch.cuda.current_stream(self.out_device) if self.device == "gpu" else None
        feed_ndarray(images.as_tensor(), img, cuda_stream=stream)
        if self.layout == "nhwc":
            img = img.permute(0, 3, 1, 2)  # (N, 3, H, W) view in channels-last memory
        dev = self.out_device
        kp = torch.from_numpy(side["keypoints"]).to(dev, non_blocking=True)
        weight = torch.from_numpy(side["target_weight"]).to(dev, non_blocking=True)
        meta = {
            k: torch.tensor(np.array([m[k] for m in side["meta"]]), dtype=dt_)
            for k, dt_ in _META_DTYPES.items()
            if k in side["meta"][0]
        }
        batch: dict[str, Any] = {
            "image": img,
            "keypoints": kp,
            "target_weight": weight,
            "meta": meta,
            "skipped": torch.tensor(side["skipped"], dtype=torch.int64),
        }
        if self.targets:
            ds = self.dataset
            scale = torch.tensor(
                [ds.heatmap_size[0] / ds.input_size[0], ds.heatmap_size[1] / ds.input_size[1]],
                dtype=kp.dtype,
                device=dev,
            )
            batch["target"] = megvii_targets(
                kp * scale, weight, ds.heatmap_size, ds.kernels, ds.data_cfg.target_normalize
            )
        return batch
