"""The ``data:`` section. Owned by rsn_fast.data; see RSN_SPEC.md sections 10, 11, 16.

Sizes come from the model section (``model.input_size``, (W, H)); the heatmap is a quarter of it.
Augmentation recipes are nested sections; ``recipe`` picks which one is used, so switching recipes is one
override (``--opt data.recipe=official``) and each recipe keeps its own exact parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

RECIPES = ("paper", "official", "mmpose")
# YAML 1.1 reads a bare `off` as false, so the official recipe is spelled "official"; "off" is accepted quoted.
_ALIASES = {"off": "official"}
MM_MEAN_RGB = [123.675, 116.28, 103.53]
MM_STD_RGB = [58.395, 57.12, 57.375]


def _fail(msg: str) -> None:
    # Imported lazily: rsn_fast.config imports this module first.
    from rsn_fast.config import ConfigError

    raise ConfigError(msg)


@dataclass
class CustomKeypoints:
    """A keypoint set given in the config (``data.keypoints: custom``); pairs and limbs are 0-based."""

    name: str = "custom"
    names: list[str] = field(default_factory=list)
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)  # empty = 0.05 for every joint
    upper_body: list[int] = field(default_factory=list)  # empty = no half-body crops


@dataclass
class PaperRecipe:
    """RSN paper section 4.1 (RSN_SPEC 16.5): scale 0.7-1.35, rotation ±45°, flip."""

    box_ext: tuple[float, float] = (1.09, 1.135)  # train box extension (w, h), same as the test one
    scale_range: tuple[float, float] = (0.7, 1.35)  # uniform; > 1 zooms out
    rotation: float = 45.0  # uniform in ±rotation degrees
    rotation_prob: float = 0.5  # the paper gives no probability; OFF's code uses 0.5
    flip_prob: float = 0.5
    half_body_prob: float = 0.0  # OFF-style half body, off by default in the paper recipe
    test_box_ext: tuple[float, float] = (1.09, 1.135)


@dataclass
class OffRecipe:
    """The official code's recipe (RSN_SPEC 11.1), exactly."""

    basic_ext: float = 1.05
    random_ext: tuple[float, float] = (0.6, 0.8)  # w *= 1 + U*0.6, h *= 1 + U*0.8
    shrink: float = 0.8
    scale_factor: float = 0.25  # scale *= shrink * U(1 - f, 1 + f)
    rotation: float = 45.0
    rotation_prob: float = 0.5
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 3  # half body when more than this many labelled joints
    half_body_ext: tuple[float, float] = (0.6, 0.8)
    upper_body: list[int] | None = None  # None: ids 0-12 for COCO (OFF includes hips), else the set's
    test_box_ext: tuple[float, float] = (1.09, 1.135)


@dataclass
class MMPoseRecipe:
    """MMPose 1.x top-down recipe (RSN_SPEC 11.2) with its default parameters."""

    box_padding: float = 1.25
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_factor: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_total: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_padding: float = 1.5
    upper_prioritized_prob: float = 0.7
    test_box_ext: tuple[float, float] = (1.25, 1.25)


@dataclass
class DaliOptions:
    """NVIDIA DALI pipeline options (``data.backend: dali``; rsn_fast.data.dali)."""

    device: str = "auto"  # auto (gpu when CUDA is available) | gpu | cpu (device_id=None, CPU operators)
    threads: int = 4  # DALI CPU threads (the counterpart of data.workers)
    prefetch: int = 2  # prefetch queue depth, in batches
    dtype: str = "fp32"  # fp32 | fp16 image output
    layout: str = "nchw"  # nchw | nhwc (same (N,3,H,W) shape, channels-last memory)


@dataclass
class DataConfig:
    """Where the data comes from, how it is augmented, encoded and loaded."""

    # old key -> new key: configs written before the rename keep loading (with a DeprecationWarning)
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"bad_image": "bad_images"}

    dataset: str = "coco"  # coco | mpii
    root: str = "data/coco"
    train_ann: str = "annotations/person_keypoints_train2017.json"  # relative to root unless absolute
    val_ann: str = "annotations/person_keypoints_val2017.json"
    train_img_dir: str = "train2017"
    val_img_dir: str = "val2017"
    dets_file: str | None = None  # COCO results-format person detections for val/test
    det_score_thr: float = 0.0
    use_gt_boxes_for_val: bool = True
    keypoints: str = "coco"  # coco | mpii | custom
    keypoint_set: CustomKeypoints = field(default_factory=CustomKeypoints)

    recipe: str = "paper"  # paper | official | mmpose ("off" = official)
    paper: PaperRecipe = field(default_factory=PaperRecipe)
    official: OffRecipe = field(default_factory=OffRecipe)
    mmpose: MMPoseRecipe = field(default_factory=MMPoseRecipe)

    color: str = "rgb"  # rgb | bgr (OFF-trained weights)
    mean: list[float] | None = None  # 0-255 scale, in the input's channel order; None: MMPose/ImageNet stats
    std: list[float] | None = None

    target_kernels: list[int] | None = None  # None: [11,9,7,5] for 1 stage, [15,11,9,7,5] for more
    # Where training targets are drawn: auto (on the GPU when training on one, else in the loader workers) |
    # workers | device. On the device the workers only send keypoints and the fused target kernels draw maps.
    targets_on: str = "auto"
    target_normalize: str = "global_max"  # global_max (OFF) | center (MMPose 1.x)
    loss_masking: str = "official"  # official | mmpose (RSN_SPEC 10.3, 16.6); "off" = official

    # A missing, empty, truncated or undecodable image: error (stop, naming the file) | skip (use the next
    # record instead, warn naming the file, count it in the log as skipped_images).
    bad_images: str = "error"
    subset: int = 0  # use only the first N items (0 = all); handy for smoke runs
    workers: int = 4
    batch_size: int = 32  # per GPU
    val_batch_size: int = 64  # per GPU
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2
    backend: str = "torch"  # torch (DataLoader + OpenCV) | dali (NVIDIA DALI twin, rsn_fast.data.dali)
    dali: DaliOptions = field(default_factory=DaliOptions)

    def validate(self) -> None:
        self.recipe = _ALIASES.get(self.recipe, self.recipe)
        self.loss_masking = _ALIASES.get(self.loss_masking, self.loss_masking)
        choices = {
            "dataset": ("coco", "mpii"),
            "recipe": RECIPES,
            "color": ("rgb", "bgr"),
            "target_normalize": ("global_max", "center"),
            "loss_masking": ("official", "mmpose"),
            "bad_images": ("error", "skip"),
            "backend": ("torch", "dali"),
            "targets_on": ("auto", "workers", "device"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                _fail(f"data.{key}: {getattr(self, key)!r} is not one of {list(allowed)}")
        if self.keypoints not in ("coco", "mpii", "custom"):
            _fail(f"data.keypoints: {self.keypoints!r} is not one of ['coco', 'mpii', 'custom']")
        if self.keypoints == "custom":
            try:
                from rsn_fast.data.keypoints import get_keypoint_set

                get_keypoint_set(self)
            except ValueError as e:
                _fail(f"data.keypoint_set: {e}")
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v is not None and len(v) != 3:
                _fail(f"data.{key}: expected 3 values (one per channel), got {len(v)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            _fail("data.std: every value must be > 0")
        if self.target_kernels is not None:
            if not self.target_kernels:
                _fail("data.target_kernels: give at least one kernel (or null for the default)")
            for k in self.target_kernels:
                if k < 1 or k % 2 == 0:
                    _fail(f"data.target_kernels: {k} is not a positive odd size")
        if not self.use_gt_boxes_for_val and not self.dets_file:
            _fail("data.dets_file: needed when data.use_gt_boxes_for_val is false")
        if self.workers < 0 or self.batch_size < 1 or self.val_batch_size < 1:
            _fail("data.workers must be >= 0 and data.batch_size / data.val_batch_size >= 1")
        dali_choices = {
            "device": ("auto", "gpu", "cpu"),
            "dtype": ("fp32", "fp16"),
            "layout": ("nchw", "nhwc"),
        }
        for key, allowed in dali_choices.items():
            if getattr(self.dali, key) not in allowed:
                _fail(f"data.dali.{key}: {getattr(self.dali, key)!r} is not one of {list(allowed)}")
        if self.dali.threads < 1 or self.dali.prefetch < 1:
            _fail("data.dali.threads and data.dali.prefetch must be >= 1")
        if self.prefetch_factor < 1:
            _fail("data.prefetch_factor must be >= 1")
        if self.subset < 0:
            _fail("data.subset must be >= 0")
        lo, hi = self.paper.scale_range
        if not 0 < lo <= hi:
            _fail(f"data.paper.scale_range: need 0 < low <= high, got {[lo, hi]}")
        lo, hi = self.mmpose.scale_factor
        if not 0 < lo <= hi:
            _fail(f"data.mmpose.scale_factor: need 0 < low <= high, got {[lo, hi]}")
        for sec in RECIPES:
            for k, v in vars(getattr(self, sec)).items():
                if k.endswith("_prob") and not 0.0 <= v <= 1.0:
                    _fail(f"data.{sec}.{k}: {v} is not a probability in [0, 1]")

    def resolved_mean_std(self) -> tuple[list[float], list[float]]:
        """Mean and std in the input's channel order (0-255 scale)."""
        mean = list(self.mean) if self.mean is not None else list(MM_MEAN_RGB)
        std = list(self.std) if self.std is not None else list(MM_STD_RGB)
        if self.color == "bgr" and self.mean is None:
            mean = mean[::-1]
        if self.color == "bgr" and self.std is None:
            std = std[::-1]
        return mean, std

    def resolved_target_kernels(self, num_stages: int) -> list[int]:
        """The target kernels (RSN_SPEC 10.2): the configured list, or the default for ``num_stages``."""
        if self.target_kernels is not None:
            return list(self.target_kernels)
        return [11, 9, 7, 5] if num_stages == 1 else [15, 11, 9, 7, 5]
