"""A tiny synthetic val set (6 images, 128x96) and a random-init RSN-18 checkpoint at 96x64 input."""

import pytest
import torch

from rsn_fast.config import load_config
from rsn_fast.data.synthetic import generate
from rsn_fast.models import build_model


def tiny_cfg(root, **test):
    overrides = [
        f"data.root={root}",
        "data.workers=0",
        "data.use_gt_boxes_for_val=false",
        "test.batch_size=4",
        *(f"test.{k}={v}" for k, v in test.items()),
    ]
    return load_config("configs/demo_synthetic.yaml", overrides)


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict_synthetic")
    paths = generate(str(out), 0, 6, seed=5, width=128, height=96)
    torch.manual_seed(1)
    model = build_model(tiny_cfg(out)).eval()
    ckpt = out / "rsn18_random.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return {"root": out, "ckpt": str(ckpt), **paths}
