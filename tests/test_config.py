"""The config loader: strict keys with the closest valid one named, type checks, overrides, base includes."""

import pytest
import yaml

from rsn_fast.config import Config, ConfigError, load_config, save_config, to_dict


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_unknown_key_names_the_key_and_the_closest_valid_one(tmp_path):
    path = _write(tmp_path / "c.yaml", {"model": {"num_stgaes": 2}})
    with pytest.raises(
        ConfigError, match=r"unknown config key 'model.num_stgaes'; did you mean 'num_stages'"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'modle'; did you mean 'model'"):
        load_config({"modle": {}})


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.num_stages=two", r"model.num_stages: expected an integer, got 'two'"),
        ("model.num_stages=2.5", r"expected an integer"),
        ("train.lr=fast", r"train.lr: expected a number"),
        ("train.channels_last=1", r"expected true or false"),
        ("model.input_size=[192]", r"expected 2 values"),
        ("model.num_blocks=3", r"expected a list"),
        ("model.input_size.w=3", r"model.input_size: expected a list"),
        ("model.num_stages.x=3", r"model.num_stages: expected an integer"),
        ("nonsense", r"must look like key.path=value"),
    ],
)
def test_overrides_are_type_checked(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_overrides_apply_and_coerce():
    cfg = load_config(None, ["model.num_stages=3", "train.lr=1", "model.input_size=[288, 384]", "name=x"])
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4  # YAML 1.1 reads 3e-4 as a string
    assert cfg.model.num_stages == 3
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
    assert cfg.model.input_size == (288, 384) and cfg.name == "x"


def test_base_files_merge_and_this_file_wins(tmp_path):
    (tmp_path / "_base_").mkdir()
    _write(
        tmp_path / "_base_" / "b.yaml",
        {"train": {"lr": 0.1, "weight_decay": 0.5}, "model": {"num_stages": 2}},
    )
    path = _write(tmp_path / "top.yaml", {"base": ["_base_/b.yaml"], "train": {"lr": 0.2}})
    cfg = load_config(path, ["model.num_stages=4"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.model.num_stages) == (0.2, 0.5, 4)


def test_missing_file_bad_yaml_and_cyclic_base(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    _write(a, {"base": ["b.yaml"]})
    _write(b, {"base": ["a.yaml"]})
    with pytest.raises(ConfigError, match="include each other"):
        load_config(str(a))


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config("configs/rsn18_coco_256x192.yaml", ["train.lr=3e-4"])
    out = tmp_path / "resolved.yaml"
    save_config(cfg, str(out))
    again = load_config(str(out))
    assert isinstance(again, Config) and to_dict(again) == to_dict(cfg)


def test_override_through_a_value_is_an_error():
    with pytest.raises(ConfigError, match=r"'input_size' is not a section"):
        load_config("configs/rsn18_coco_256x192.yaml", ["model.input_size.w=3"])


def test_bare_off_is_the_string_off_for_string_choices(tmp_path):
    # YAML 1.1 reads `off` as false; string fields whose choices include "off" must take it as that word
    cfg = load_config(None, ["train.amp=off", "model.fused=off"])
    assert cfg.train.amp == "off" and cfg.model.fused == "off"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\n")
    assert load_config(str(path)).train.amp == "off"
    with pytest.raises(ConfigError, match=r"train.amp"):
        load_config(None, ["train.amp=on"])  # true is "on", which amp does not offer


def test_renamed_key_still_loads_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"'data.bad_image' is now 'bad_images'"):
        cfg = load_config(None, ["data.bad_image=skip"])
    assert cfg.data.bad_images == "skip"
    with pytest.raises(ConfigError, match=r"both given"):
        load_config(None, ["data.bad_image=skip", "data.bad_images=error"])
