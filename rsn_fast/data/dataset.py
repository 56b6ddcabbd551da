"""The top-down dataset (COCO / MPII / the synthetic set) and batch collation with batched targets.

Loaders (torch DataLoader or the DALI twin) are built in :mod:`rsn_fast.data.loaders`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rsn_fast.data import transforms as T
from rsn_fast.data.annotations import coco_records, detection_records, mpii_records
from rsn_fast.data.image_io import ImageReadError, read_image
from rsn_fast.data.keypoints import KeypointSet, get_keypoint_set
from rsn_fast.ops.megvii_targets import megvii_targets

logger = logging.getLogger(__name__)

__all__ = ["TopDownDataset", "build_dataset", "collate_batch", "ImageReadError"]

_META_KEYS = ("image_id", "center", "box_size", "rotation", "flipped", "score", "index")


def _resolve(root: str, path: str | None) -> str | None:
    if path is None:
        return None
    return path if os.path.isabs(path) else os.path.join(root, path)


class TopDownDataset(Dataset):
    """One item per person box: the affine crop, its keypoints and weights, optionally its target heatmaps.

    Args:
        cfg: the root ``Config`` (the data section plus ``model.input_size``/``num_stages``).
        split: "train" (augmented, targets) or "val" (test crop, GT boxes or detections).
        item_targets: compute ``target`` per item; the DataLoader turns this off and builds targets once per
            batch in :func:`collate_batch` (same values, batched).
    """

    def __init__(self, cfg: Any, split: str, item_targets: bool = True):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.cfg = cfg
        self.data_cfg = cfg.data
        self.split = split
        self.train = split == "train"
        self.item_targets = item_targets
        self.kset: KeypointSet = get_keypoint_set(cfg.data)
        k = self.kset.num_keypoints
        if cfg.model.num_keypoints != k:
            raise ValueError(
                f"model.num_keypoints is {cfg.model.num_keypoints} but the keypoint set "
                f"'{self.kset.name}' has {k} keypoints"
            )
        self.flip_index = self.kset.flip_index()
        self.input_size = tuple(int(v) for v in cfg.model.input_size)
        self.heatmap_size = (self.input_size[0] // 4, self.input_size[1] // 4)
        self.kernels = cfg.data.resolved_target_kernels(cfg.model.num_stages)
        mean, std = cfg.data.resolved_mean_std()
        self.mean = np.asarray(mean, dtype=np.float32)
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float32)
        self.stats: dict[str, int] = {"degenerate_boxes": 0}
        d = cfg.data
        ann = _resolve(d.root, d.train_ann if self.train else d.val_ann)
        img_dir = _resolve(d.root, d.train_img_dir if self.train else d.val_img_dir)
        self.images: dict[int, dict] = {}
        if d.dataset == "mpii":
            self.records = mpii_records(ann, img_dir, k)
        else:
            self.records, self.images = coco_records(ann, img_dir, k, self.stats)
            if not self.train and not d.use_gt_boxes_for_val:
                self.records = detection_records(
                    _resolve(d.root, d.dets_file), self.images, img_dir, k, d.det_score_thr, self.stats
                )
        if d.subset:
            self.records = self.records[: d.subset]
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1

    def __len__(self) -> int:
        return len(self.records)

    def set_rng(self, seed: int) -> None:
        """Fix this process's augmentation generator (tests, reproducible single-process runs)."""
        self._rng = np.random.default_rng(seed)
        self._rng_pid = os.getpid()

    def _generator(self) -> np.random.Generator:
        # One generator per process: a DataLoader worker seeds it from its torch seed (base seed + worker id),
        # and a persistent worker keeps drawing from it, so epochs differ.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed() % (2**63))
            self._rng_pid = os.getpid()
        return self._rng

    def read_image(self, path: str) -> np.ndarray:
        """BGR uint8 (H, W, 3); raises ImageReadError naming the file (missing, empty, truncated, undecodable)."""
        return read_image(path)

    def __getitem__(self, index: int) -> dict:
        skipped = 0
        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            try:
                image = self.read_image(self.records[i]["image_file"])
            except ImageReadError as e:
                if self.data_cfg.bad_images == "error":
                    raise
                skipped += 1
                logger.warning("skipping: %s", e)
                if skipped >= 20:
                    raise ImageReadError(f"{skipped} unreadable images in a row, last: {e}") from None
                continue
            item = self.prepare(image, i)
            # Count the requested record once (not each substitute tried), so an epoch's sum is the number
            # of records with unreadable images.
            item["skipped"] = int(skipped > 0)
            return item
        raise ImageReadError("no readable image in the dataset")

    def params(self, index: int, image_width: int) -> T.AugParams:
        rec = self.records[index]
        if self.train:
            return T.sample_train_params(
                self._generator(), self.data_cfg, rec["box"], rec["keypoints"], self.kset, self.input_size
            )
        return T.test_params(self.data_cfg, rec["box"], self.input_size)

    def prepare(self, image: np.ndarray, index: int, params: T.AugParams | None = None) -> dict:
        """Crop, normalise and encode one record; ``params`` overrides the sampled augmentation."""
        rec = self.records[index]
        p = params if params is not None else self.params(index, image.shape[1])
        crop, m = T.crop_input(image, p, self.input_size, self.data_cfg.color, self.mean, self.inv_std)
        kp = T.transform_keypoints(rec["keypoints"], m, p.flip, self.flip_index)
        weight = T.crop_visibility(kp, self.input_size)
        meta = {
            "image_id": torch.tensor(rec["image_id"], dtype=torch.int64),
            "center": torch.tensor(p.center, dtype=torch.float32),
            "box_size": torch.tensor(p.size, dtype=torch.float32),
            "rotation": torch.tensor(p.rotation, dtype=torch.float32),
            "flipped": torch.tensor(p.flip),
            "score": torch.tensor(rec["score"], dtype=torch.float32),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if "head_size" in rec:
            meta["head_size"] = torch.tensor(rec["head_size"], dtype=torch.float32)
        item = {
            "image": torch.from_numpy(crop),
            "keypoints": torch.from_numpy(kp[:, :2].astype(np.float32)),
            "target_weight": torch.from_numpy(weight),
            "meta": meta,
        }
        if self.train and self.item_targets:
            item["target"] = self.targets(item["keypoints"][None], item["target_weight"][None])[0]
        return item

    def targets(self, keypoints: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(N, K, 2) input-pixel keypoints → (N, L, K, Hh, Wh) targets (heatmap px = input px · Wh / W).

        Runs on the keypoints' device: the trainer calls it on the GPU when ``data.targets_on`` says so.
        """
        sx = self.heatmap_size[0] / self.input_size[0]
        sy = self.heatmap_size[1] / self.input_size[1]
        hm = keypoints * keypoints.new_tensor([sx, sy])  # on the keypoints' device (GPU targets in training)
        return megvii_targets(hm, weights, self.heatmap_size, self.kernels, self.data_cfg.target_normalize)


class Collate:
    """Picklable collate_fn: stacks items; for training batches without per-item targets, builds the targets once for the batch."""

    def __init__(self, dataset: TopDownDataset):
        self.dataset = dataset

    def __call__(self, items: list[dict]) -> dict:
        return collate_batch(items, self.dataset)


def collate_batch(items: list[dict], dataset: TopDownDataset | None = None) -> dict:
    """Stack a list of items into the batch dict of the data contract (see HELPERS brief)."""
    batch: dict[str, Any] = {
        "image": torch.stack([it["image"] for it in items]),
        "keypoints": torch.stack([it["keypoints"] for it in items]),
        "target_weight": torch.stack([it["target_weight"] for it in items]),
        "meta": {k: torch.stack([it["meta"][k] for it in items]) for k in items[0]["meta"]},
        "skipped": torch.tensor(sum(int(it.get("skipped", 0)) for it in items), dtype=torch.int64),
    }
    if "target" in items[0]:
        batch["target"] = torch.stack([it["target"] for it in items])
    elif dataset is not None and dataset.train:
        batch["target"] = dataset.targets(batch["keypoints"], batch["target_weight"])
    return batch


def as_config(cfg: Any) -> Any:
    """A root ``Config`` from a Config, a YAML path or a mapping."""
    if isinstance(cfg, (str, os.PathLike, dict)):
        from rsn_fast.config import load_config

        return load_config(cfg)
    return cfg


def build_dataset(cfg: Any, split: str, item_targets: bool = True) -> TopDownDataset:
    """The dataset for ``split`` ("train" | "val") from a root ``Config`` (or a YAML path / mapping)."""
    return TopDownDataset(as_config(cfg), split, item_targets=item_targets)
