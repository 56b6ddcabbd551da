"""rsn_fast.Predictor: same keypoints as rsn_fast/test.py on the same boxes; inputs, boxes and errors."""

import json
from collections import defaultdict

import cv2
import numpy as np
import pytest
import torch

import rsn_fast
from rsn_fast.predictor import PredictorError, as_boxes
from tests.predict.conftest import tiny_cfg


@pytest.fixture(scope="module")
def predictor(tiny_set):
    return rsn_fast.Predictor(tiny_cfg(tiny_set["root"]), tiny_set["ckpt"], device="cpu", batch_size=3)


def _dets_by_image(path):
    by = defaultdict(list)
    for d in json.load(open(path)):
        by[d["image_id"]].append(d["bbox"] + [d["score"]])
    return by


def test_predictions_equal_test_py_on_the_same_boxes(tiny_set, tmp_path):
    from rsn_fast import test as test_py

    cfg = tiny_cfg(tiny_set["root"])
    out = tmp_path / "results.json"
    test_py.run(cfg, tiny_set["ckpt"], str(out), progress=False)
    want = defaultdict(list)
    for r in json.load(open(out)):
        want[r["image_id"]].append(r)
    # test.py's batches (4 crops, detection order): the same forward passes, so the same numbers
    pred = rsn_fast.Predictor(cfg, tiny_set["ckpt"], device="cpu", batch_size=4)
    ann = json.load(open(tiny_set["val"]))
    dets = _dets_by_image(tiny_set["dets"])
    images = [tiny_set["root"] / "images" / im["file_name"] for im in ann["images"]]
    got = pred.predict_batch(images, [dets.get(im["id"], []) for im in ann["images"]])
    n = 0
    for im, people in zip(ann["images"], got):
        ref = want.get(im["id"], [])
        assert len(people) == len(ref), im["file_name"]
        for p, r in zip(people, ref):
            kp = np.asarray(r["keypoints"]).reshape(-1, 3)
            np.testing.assert_array_equal(p.keypoints, np.float32(kp[:, :2]))
            np.testing.assert_array_equal(p.keypoint_scores, np.float32(kp[:, 2]))
            assert p.score == r["score"]
            n += 1
    assert n >= 6
    # the keypoints are spread over the image, not a constant (a test on flat maps would prove little)
    allk = np.concatenate([p.keypoints for ps in got for p in ps])
    assert allk.std(axis=0).min() > 3.0


def test_array_inputs_colour_order_and_whole_image_box(predictor, tiny_set):
    path = str(tiny_set["root"] / "images" / "val_000002.jpg")
    bgr = cv2.imread(path)
    a = predictor(path)
    b = predictor(bgr)
    c = predictor(np.ascontiguousarray(bgr[..., ::-1]))  # RGB given as BGR: a different image
    assert len(a) == 1
    np.testing.assert_array_equal(a[0].keypoints, b[0].keypoints)
    np.testing.assert_array_equal(a[0].box, [0, 0, 128, 96])
    assert a[0].box_score == 1.0
    assert not np.array_equal(a[0].keypoint_scores, c[0].keypoint_scores)
    rgb_pred = rsn_fast.Predictor(predictor.cfg, tiny_set["ckpt"], device="cpu", color="rgb")
    d = rgb_pred(np.ascontiguousarray(bgr[..., ::-1]))
    np.testing.assert_allclose(d[0].keypoints, a[0].keypoints, atol=1e-4)


def test_xyxy_equals_xywh_and_score_threshold(predictor, tiny_set):
    path = str(tiny_set["root"] / "images" / "val_000003.jpg")
    xywh = [[10.0, 5.0, 40.0, 70.0, 0.9], [60.0, 20.0, 30.0, 50.0, 0.3]]
    xyxy = [[10.0, 5.0, 50.0, 75.0, 0.9], [60.0, 20.0, 90.0, 70.0, 0.3]]
    a = predictor(path, xywh)
    b = predictor(path, xyxy, box_format="xyxy")
    assert len(a) == 2
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.keypoints, q.keypoints)
        np.testing.assert_array_equal(p.box, q.box)
    assert [p.box_score for p in a] == pytest.approx([0.9, 0.3])
    kept = predictor(path, xywh, score_thr=0.5)
    assert len(kept) == 1 and kept[0].box_score == pytest.approx(0.9)
    # a person's keypoints depend on its own box only (batched crops are independent)
    np.testing.assert_allclose(kept[0].keypoints, a[0].keypoints, atol=1e-4)
    r = a[0].to_coco(7)
    assert r["image_id"] == 7 and r["category_id"] == 1 and len(r["keypoints"]) == 17 * 3


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([[10, 10, 0, 20]], r"zero or negative size"),
        ([[10, 10, 20, -1]], r"zero or negative size"),
        ([[500, 10, 20, 20]], r"outside the 128x96 image"),
        ([[-50, -50, 20, 20]], r"outside the 128x96 image"),
        ([[1, 2, 3]], r"\(N, 4\) or \(N, 5\)"),
        ([[1, 2, 3, float("nan")]], r"non-finite"),
        ([[1, 2, 3, 4], [1, 2, 3, 4, 1]], r"\(N, 4\) or \(N, 5\)"),
    ],
)
def test_bad_boxes_are_named(boxes, match):
    with pytest.raises(PredictorError, match=match):
        as_boxes(boxes, (96, 128, 3))


def test_bad_images_and_config_and_checkpoint(predictor, tiny_set, tmp_path):
    from rsn_fast.models import CheckpointError

    with pytest.raises(PredictorError, match="image file not found: .*nope.jpg"):
        predictor(str(tmp_path / "nope.jpg"))
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(PredictorError, match="cannot decode image: .*corrupt.jpg"):
        predictor(str(bad))
    with pytest.raises(PredictorError, match="uint8"):
        predictor(np.zeros((8, 8, 3), np.float32))
    not_pose = tmp_path / "detector.yaml"
    not_pose.write_text("backbone: {type: ResNet}\nneck: {}\n")
    with pytest.raises(PredictorError, match="detector.yaml is not an rsn_fast pose-model config"):
        rsn_fast.Predictor(str(not_pose), tiny_set["ckpt"], device="cpu")
    # an RSN-18 checkpoint for a 2-stage config: the error lists differing keys
    cfg2 = tiny_cfg(tiny_set["root"])
    cfg2.model.num_stages = 2
    with pytest.raises(CheckpointError, match=r"rsn18_random\.pth") as e:
        rsn_fast.Predictor(cfg2, tiny_set["ckpt"], device="cpu")
    assert "missing" in str(e.value) and "multi_stage_rsn" in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        rsn_fast.Predictor(cfg2, str(tmp_path / "missing.pth"), device="cpu")


def test_import_rsn_fast_is_light():
    import subprocess
    import sys

    code = "import sys, rsn_fast; print('torch' in sys.modules, rsn_fast.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False"
    assert callable(rsn_fast.Predictor) and rsn_fast.PersonPose.__name__ == "PersonPose"
    assert torch.is_tensor(torch.zeros(1))


def test_fast_cpu_runs_one_batch_shape_and_gives_the_same_poses(tiny_set, monkeypatch):
    """fast_cpu wraps the model with compile_for_cpu_inference (its real compile takes minutes here, so a
    stand-in records the input shapes): every forward gets batch_size crops, padding dropped afterwards."""
    import rsn_fast.nn

    shapes = []

    class Recorder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            shapes.append(tuple(x.shape))
            assert x.is_contiguous(memory_format=torch.channels_last)
            return self.model(x)

    monkeypatch.setattr(rsn_fast.nn, "compile_for_cpu_inference", lambda m: Recorder(m))
    cfg = tiny_cfg(tiny_set["root"])
    fast = rsn_fast.Predictor(cfg, tiny_set["ckpt"], device="cpu", batch_size=4, fast_cpu=True)
    plain = rsn_fast.Predictor(cfg, tiny_set["ckpt"], device="cpu", batch_size=4)
    path = str(tiny_set["root"] / "images" / "val_000004.jpg")
    boxes = [
        [5, 5, 40, 60, 0.8],
        [30, 10, 50, 70, 0.7],
        [60, 20, 40, 60, 0.6],
        [1, 1, 100, 90, 0.5],
        [9, 9, 9, 9, 1.0],
    ]
    a, b = fast(path, boxes), plain(path, boxes)
    assert {s[0] for s in shapes} == {4} and len(shapes) == 4  # 5 crops: 2 batches, each with its flip pass
    assert len(a) == len(b) == 5
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.keypoints, q.keypoints, atol=1e-3)


def test_cuda_device_without_gpu_is_a_clear_error(tiny_set):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(PredictorError, match="no CUDA GPU"):
        rsn_fast.Predictor(tiny_cfg(tiny_set["root"]), tiny_set["ckpt"], device="cuda")
