"""python -m rsn_fast.predict: images, folders, videos, box files, drawings, skips and bad-input errors."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import rsn_fast
from rsn_fast.predict import main

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo_synthetic.yaml")


def _video(path, frames):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for f in frames:
        w.write(f)
    w.release()


@pytest.fixture()
def inputs(tiny_set, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(tiny_set["root"] / "images", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    frames = [cv2.imread(str(p)) for p in sorted(folder.glob("val_*.jpg"))[:3]]
    _video(tmp_path / "clip.mp4", frames)
    return folder, tmp_path / "clip.mp4"


def _run(args, tiny_set, out):
    return main(["--config", CONFIG, "--checkpoint", tiny_set["ckpt"], "--device", "cpu", "--out", str(out),
                 "--no-progress", "--no-flip", *map(str, args)])  # fmt: skip


def test_folder_video_draw_and_skips(tiny_set, inputs, tmp_path, capsys):
    folder, clip = inputs
    out = tmp_path / "out"
    rc = _run([folder, clip, tmp_path / "missing.png", "--draw"], tiny_set, out)
    err = capsys.readouterr().err
    assert rc == 0
    res = json.load(open(out / "keypoints.json"))
    images = [r for r in res if "frame" not in r]
    frames = [r for r in res if "frame" in r]
    assert len(images) == 6 and len(frames) == 3  # whole image = one person each
    assert [r["frame"] for r in frames] == [0, 1, 2] and all(r["file_name"] == str(clip) for r in frames)
    assert sorted(r["image_id"] for r in images) == list(range(1, 7))  # broken.jpg is position 0
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in res)
    assert "skipped 2 input(s)" in err and "broken.jpg" in err and "missing.png: not found" in err
    vis = sorted(p.name for p in (out / "vis").iterdir())
    assert vis == ["clip.mp4"] + [f"val_{i:06d}.jpg" for i in range(1, 7)]
    cap = cv2.VideoCapture(str(out / "vis" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    drawn = cv2.imread(str(out / "vis" / "val_000001.jpg"))
    assert drawn.shape == (96, 128, 3)
    # the API on the same image (whole-image box, no flip) gives the JSON's keypoints
    pred = rsn_fast.Predictor(CONFIG, tiny_set["ckpt"], device="cpu", flip_test=False)
    p = pred(str(folder / "val_000001.jpg"))[0]
    first = next(r for r in images if r["file_name"].endswith("val_000001.jpg"))
    np.testing.assert_allclose(np.reshape(first["keypoints"], (-1, 3))[:, :2], p.keypoints, atol=1e-3)


def test_box_file_by_file_name_and_score_threshold(tiny_set, inputs, tmp_path):
    folder, _ = inputs
    ann = json.load(open(tiny_set["val"]))
    names = {im["id"]: im["file_name"] for im in ann["images"]}
    dets = json.load(open(tiny_set["dets"]))
    for d in dets:
        d["file_name"] = names.pop(d["image_id"], None) or next(
            im["file_name"] for im in ann["images"] if im["id"] == d["image_id"]
        )
        del d["image_id"]
    box_file = tmp_path / "dets.json"
    box_file.write_text(json.dumps(dets))
    out = tmp_path / "out"
    assert _run([folder, "--boxes", box_file, "--score-thr", 0.5], tiny_set, out) == 0
    res = json.load(open(out / "keypoints.json"))
    want = [d for d in dets if d["score"] >= 0.5]
    assert len(res) == len(want) > 0
    assert sorted(round(r["bbox"][0], 2) for r in res) == sorted(round(d["bbox"][0], 2) for d in want)


def _sentinel(out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "keypoints.json").write_text('["earlier run"]')


@pytest.mark.parametrize(
    "dets, match",
    [
        (
            [{"image_id": 1000001, "bbox": [1, 2, 30, 40], "score": 0.9}],
            r"entry \[0\]: image_id 1000001 matches no",
        ),
        (
            [{"file_name": "other.jpg", "bbox": [1, 2, 30, 40]}],
            r"entry \[0\]: file_name 'other.jpg' is not among",
        ),
        (
            [{"image_id": 0, "bbox": [1, 2, 30, 40]}, {"image_id": 1, "bbox": [1, 2, 0, 40]}],
            r"entry \[1\]: box .* zero",
        ),
        ([{"image_id": 0, "bbox": [1, 2, 30]}], r"entry \[0\]: 'bbox' must be 4 numbers"),
        (
            [{"image_id": 2, "bbox": [900, 2, 30, 40]}],
            r"val_000002.jpg: boxes\[0\] = .* outside the 128x96 image",
        ),
    ],
)
def test_bad_box_files_are_named_and_earlier_output_is_kept(tiny_set, inputs, tmp_path, capsys, dets, match):
    folder, _ = inputs
    box_file = tmp_path / "dets.json"
    box_file.write_text(json.dumps(dets))
    out = tmp_path / "out"
    _sentinel(out)
    assert _run([folder, "--boxes", box_file], tiny_set, out) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re

    assert re.search(match, err), err
    assert json.loads((out / "keypoints.json").read_text()) == ["earlier run"]


def test_bad_config_checkpoint_and_inputs(tiny_set, inputs, tmp_path, capsys):
    folder, _ = inputs
    out = tmp_path / "out"
    _sentinel(out)
    yaml = tmp_path / "det.yaml"
    yaml.write_text("detector: {type: YOLO}\n")
    assert (
        main(["--config", str(yaml), "--checkpoint", tiny_set["ckpt"], "--out", str(out), str(folder)]) == 2
    )
    assert "det.yaml is not an rsn_fast pose-model config" in capsys.readouterr().err
    rsn50 = str(Path(CONFIG).parent / "rsn50_coco_256x192.yaml")
    assert main(["--config", rsn50, "--checkpoint", tiny_set["ckpt"], "--out", str(out), str(folder)]) == 2
    err = capsys.readouterr().err
    assert "rsn18_random.pth" in err and ("missing" in err or "shape" in err)
    assert _run([tmp_path / "nothing_here"], tiny_set, out) == 2
    assert "no readable input" in capsys.readouterr().err
    assert json.loads((out / "keypoints.json").read_text()) == ["earlier run"]


def test_video_boxes_past_the_last_frame_are_reported(tiny_set, inputs, tmp_path, capsys):
    """A box file for a longer video: the boxes of frames the video does not have are named, not dropped
    silently; the frames it has are estimated with their boxes."""
    _, clip = inputs  # 3 frames
    box_file = tmp_path / "dets.json"
    dets = [{"image_id": f, "bbox": [10, 10, 60, 70], "score": 0.9} for f in (0, 2, 5, 7)]
    box_file.write_text(json.dumps(dets))
    out = tmp_path / "out"
    assert _run([clip, "--boxes", box_file], tiny_set, out) == 0
    err = capsys.readouterr().err
    assert [r["frame"] for r in json.load(open(out / "keypoints.json"))] == [0, 2]
    assert f"{clip}: 2 box(es) for frame(s) 5..7 past the video's last frame 2 were not used" in err
