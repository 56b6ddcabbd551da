"""Dataset and loader: the batch contract, targets, bad input, detections, a custom 6-keypoint set end to end."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from rsn_fast.config import ConfigError, load_config
from rsn_fast.data import build_dataloader, build_dataset
from rsn_fast.data.annotations import AnnotationError
from rsn_fast.data.dataset import ImageReadError
from rsn_fast.data.transforms import AugParams
from rsn_fast.losses import RSNLoss
from rsn_fast.ops.megvii_targets import megvii_targets_cv2_loop
from tests.data.conftest import synthetic_cfg


def test_train_batch_contract_with_workers(synthetic_dir):
    cfg = load_config(synthetic_cfg(synthetic_dir, workers=2, persistent_workers=True))
    loader, sampler = build_dataloader(cfg, "train", seed=1)
    assert sampler is None
    b = next(iter(loader))
    n, k = 4, 17
    assert b["image"].shape == (n, 3, 128, 96) and b["image"].dtype == torch.float32
    assert b["target"].shape == (n, 4, k, 32, 24) and b["target_weight"].shape == (n, k)
    assert set(b["meta"]) == {"image_id", "center", "box_size", "rotation", "flipped", "score", "index"}
    assert b["meta"]["image_id"].dtype == torch.int64 and b["meta"]["flipped"].dtype == torch.bool
    assert set(np.unique(b["target_weight"].numpy())) <= {0.0, 1.0, 2.0}
    # Batched targets equal the cv2 procedure on the batch's own keypoints (heatmap px = input px / 4).
    kp = (b["keypoints"].numpy() / 4.0).astype(np.float32)
    want = megvii_targets_cv2_loop(kp, b["target_weight"].numpy(), (24, 32), [11, 9, 7, 5])
    np.testing.assert_allclose(b["target"].numpy(), want, atol=1e-3, rtol=0)
    assert b["image"].std() > 0.1  # normalised, not raw 0-255


def test_item_normalisation_colour_and_crop_weights(synthetic_dir):
    cfg = load_config(synthetic_cfg(synthetic_dir))
    ds = build_dataset(cfg, "val")
    import cv2

    rec = ds.records[0]
    img = cv2.imread(rec["image_file"])
    # A crop far to the right of the person: every joint leaves the crop → weight 0 and zero targets.
    far = AugParams(np.array(rec["box"][:2]) + 2000.0, np.array([96.0, 128.0]))
    ds.train = True
    item = ds.prepare(img, 0, far)
    assert item["target_weight"].abs().sum() == 0 and item["target"].abs().sum() == 0
    # Identity-like crop: pixel values are the RGB image normalised with MMPose's mean/std.
    p = AugParams(np.array([48.0, 64.0]), np.array([96.0, 128.0]))
    item = ds.prepare(img, 0, p)
    want = (img[:128, :96, ::-1].astype(np.float32) - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    np.testing.assert_allclose(item["image"].numpy().transpose(1, 2, 0), want, atol=1e-4)
    cfg_bgr = load_config(synthetic_cfg(synthetic_dir, color="bgr"))
    item = build_dataset(cfg_bgr, "val").prepare(img, 0, p)
    want = (img[:128, :96].astype(np.float32) - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]
    np.testing.assert_allclose(item["image"].numpy().transpose(1, 2, 0), want, atol=1e-4)


def test_val_with_detections(synthetic_dir):
    cfg = load_config(
        synthetic_cfg(
            synthetic_dir, use_gt_boxes_for_val=False, dets_file="detections_val.json", det_score_thr=0.5
        )
    )
    ds = build_dataset(cfg, "val")
    dets = json.load(open(synthetic_dir / "detections_val.json"))
    assert len(ds) == sum(d["score"] >= 0.5 for d in dets)
    item = ds[0]
    assert "target" not in item and item["meta"]["score"] >= 0.5
    loader, _ = build_dataloader(cfg, "val")
    b = next(iter(loader))
    assert "target" not in b and b["image"].shape[0] == min(4, len(ds))


def _copy(synthetic_dir, tmp_path):
    dst = tmp_path / "syn"
    shutil.copytree(synthetic_dir, dst)
    return dst


def test_bad_image_error_and_skip(synthetic_dir, tmp_path):
    root = _copy(synthetic_dir, tmp_path)
    ds = build_dataset(load_config(synthetic_cfg(root)), "train")
    victim = ds.records[1]["image_file"]
    os.remove(victim)
    with pytest.raises(ImageReadError, match=os.path.basename(victim)):
        ds[1]
    with open(ds.records[2]["image_file"], "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(ImageReadError, match="cannot decode"):
        ds[2]
    cfg = load_config(synthetic_cfg(root, bad_images="skip", batch_size=3))
    loader, _ = build_dataloader(cfg, "train")
    loader = torch.utils.data.DataLoader(loader.dataset, batch_size=3, collate_fn=loader.collate_fn)
    total = sum(int(b["skipped"]) for b in loader)
    broken = {victim, ds.records[2]["image_file"]}
    assert total == sum(r["image_file"] in broken for r in ds.records)


def test_invalid_coco_names_file_and_field(synthetic_dir, tmp_path):
    root = _copy(synthetic_dir, tmp_path)
    path = root / "annotations/person_keypoints_train.json"
    data = json.load(open(path))
    data["annotations"][3]["keypoints"] = data["annotations"][3]["keypoints"][:-3]
    json.dump(data, open(path, "w"))
    with pytest.raises(AnnotationError, match=r"person_keypoints_train\.json: annotations\[3\]\.keypoints"):
        build_dataset(load_config(synthetic_cfg(root)), "train")
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        build_dataset(load_config(synthetic_cfg(root)), "train")


def test_degenerate_boxes_dropped_and_counted(synthetic_dir, tmp_path):
    root = _copy(synthetic_dir, tmp_path)
    path = root / "annotations/person_keypoints_train.json"
    data = json.load(open(path))
    n = len(data["annotations"])
    data["annotations"][0]["bbox"][2] = 0.0
    data["annotations"][1]["bbox"] = [-50.0, -50.0, 10.0, 10.0]
    json.dump(data, open(path, "w"))
    ds = build_dataset(load_config(synthetic_cfg(root)), "train")
    assert ds.stats["degenerate_boxes"] == 2 and len(ds) == n - 2


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="data.recipe"):
        load_config({"data": {"recipe": "fancy"}})
    with pytest.raises(ConfigError, match="dets_file"):
        load_config({"data": {"use_gt_boxes_for_val": False}})
    with pytest.raises(ConfigError, match="flip pair"):
        load_config(
            {"data": {"keypoints": "custom", "keypoint_set": {"names": ["a", "b"], "flip_pairs": [[0, 2]]}}}
        )
    with pytest.raises(ConfigError, match="odd"):
        load_config({"data": {"target_kernels": [11, 8]}})


def test_custom_six_keypoint_set_end_to_end(synthetic_dir, tmp_path):
    # Shoulders, wrists and ankles of the synthetic figures as a made-up 6-keypoint set.
    pick = [5, 6, 9, 10, 15, 16]
    root = _copy(synthetic_dir, tmp_path)
    path = root / "annotations/person_keypoints_train.json"
    data = json.load(open(path))
    for a in data["annotations"]:
        kp = np.array(a["keypoints"]).reshape(17, 3)[pick]
        a["keypoints"] = kp.ravel().tolist()
        a["num_keypoints"] = int((kp[:, 2] > 0).sum())
    json.dump(data, open(path, "w"))
    raw = synthetic_cfg(root, keypoints="custom", batch_size=4)
    raw["data"]["keypoint_set"] = {
        "name": "six",
        "names": ["ls", "rs", "lw", "rw", "la", "ra"],
        "flip_pairs": [[0, 1], [2, 3], [4, 5]],
        "skeleton": [[0, 2], [1, 3], [0, 1]],
        "upper_body": [0, 1, 2, 3],
    }
    raw["model"]["num_keypoints"] = 6
    cfg = load_config(raw)
    loader, _ = build_dataloader(cfg, "train")
    b = next(iter(loader))
    assert b["target"].shape == (4, 4, 6, 32, 24) and b["target_weight"].shape == (4, 6)
    outputs = [torch.randn(4, 6, 32, 24, requires_grad=True) for _ in range(4)]
    total, logs = RSNLoss(1, 4, cfg.data.loss_masking)(outputs, b["target"], b["target_weight"])
    total.backward()
    assert torch.isfinite(total) and all(o.grad.abs().sum() > 0 for o in outputs)
    bad = dict(raw, model={"input_size": [96, 128], "num_keypoints": 17})
    with pytest.raises(ValueError, match="num_keypoints"):
        build_dataset(load_config(bad), "train")
