import pytest

from rsn_fast.data.synthetic import generate


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate(str(out), 16, 8, seed=3)
    return out


def synthetic_cfg(root, **data):
    d = {
        "root": str(root),
        "train_ann": "annotations/person_keypoints_train.json",
        "val_ann": "annotations/person_keypoints_val.json",
        "train_img_dir": "images",
        "val_img_dir": "images",
        "workers": 0,
        "batch_size": 4,
        "val_batch_size": 4,
    }
    d.update(data)
    return {"data": d, "model": {"input_size": [96, 128]}}
