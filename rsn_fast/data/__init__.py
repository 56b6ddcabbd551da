"""Data: keypoint sets, COCO/MPII/synthetic top-down datasets, augmentation, targets and loaders."""

from rsn_fast.data.dataset import TopDownDataset, build_dataset, collate_batch
from rsn_fast.data.keypoints import KeypointSet, get_keypoint_set
from rsn_fast.data.loaders import build_dataloader

__all__ = [
    "KeypointSet",
    "TopDownDataset",
    "build_dataloader",
    "build_dataset",
    "collate_batch",
    "get_keypoint_set",
]
