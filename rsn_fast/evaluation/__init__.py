"""Evaluation: COCO keypoint results and COCOeval (``coco``), OKS-NMS (``nms``), MPII PCKh (``mpii``)."""

from rsn_fast.evaluation.coco import (
    coco_keypoint_eval,
    keypoints_to_coco_results,
    merge_results,
    person_scores,
)
from rsn_fast.evaluation.mpii import head_sizes_from_boxes, pckh
from rsn_fast.evaluation.nms import oks_nms, oks_nms_results

__all__ = [
    "coco_keypoint_eval",
    "head_sizes_from_boxes",
    "keypoints_to_coco_results",
    "merge_results",
    "oks_nms",
    "oks_nms_results",
    "person_scores",
    "pckh",
]
