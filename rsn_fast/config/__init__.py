"""Typed configuration: YAML files loaded into nested dataclasses.

Every section is a dataclass; :class:`Config` is the root. Loading is strict: a key that the schema does not
know raises :class:`ConfigError` naming the key and the closest valid one, and values are type checked.
Command-line overrides use dotted keys (``--opt model.num_stages=2``) with the same checks.

Each part of the package owns its section in a module of this package (``model.py``, ``data.py``,
``train.py``, ``test.py``); this module holds only the machinery and the root.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from rsn_fast.config.data import DataConfig
from rsn_fast.config.model import ModelConfig
from rsn_fast.config.test import TestConfig
from rsn_fast.config.train import TrainConfig

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TestConfig",
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "to_dict",
    "from_dict",
    "save_config",
]


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


@dataclass
class Config:
    """The root of every configuration file."""

    name: str = "rsn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    # Files whose keys are loaded first; this file's keys then override them (paths relative to this file).
    base: list[str] = field(default_factory=list)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return match[0] if match else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless (int → float, list → tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or (types.UnionType is not None and isinstance(tp, types.UnionType)):
        errors = []
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponent floats without a dot (3e-4) as strings; accept any numeric string.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool):
            # YAML 1.1 reads a bare off/on (no/yes) as a boolean; every string choice spells them "off"/"on"
            # (train.amp: off, model.fused: off, ...), so take the boolean as that word and let the field's
            # own choices decide.
            return "on" if value else "off"
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    renamed = getattr(cls, "RENAMED_KEYS", {})
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key in renamed and key not in names:
            new = renamed[key]
            if new in data:
                raise ConfigError(
                    f"config keys '{path}' and its new name '{new}' are both given; keep '{new}'"
                )
            warnings.warn(
                f"config key '{path}' is now '{new}'; the old name still works",
                DeprecationWarning,
                stacklevel=2,
            )
            key = new
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'; did you mean '{_closest(str(key), names)}'?")
        kwargs[key] = _coerce(value, hints[key], path)
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if callable(post):
        post()
    return obj


def to_dict(cfg: Any) -> Any:
    """The plain-data form of a config (tuples become lists), suitable for YAML or JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"config {path}: 'base' files include each other")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("base", []) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for b in bases:
        merged = _merge(merged, _read_yaml(os.path.join(os.path.dirname(path), b), seen + (path,)))
    return _merge(merged, data)


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to the raw mapping ``data``."""
    for text in overrides or []:
        key, value = _parse_override(text)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{p}' is not a section")
        node[parts[-1]] = value
    return data


def load_config(
    source: str | os.PathLike | dict | Config | None = None, overrides: list[str] | None = None
) -> Config:
    """Load a :class:`Config` from a YAML path, a mapping or an existing config, then apply overrides.

    Args:
        source: a YAML file, a mapping with the same structure, a ``Config`` (copied), or None for defaults.
        overrides: ``["model.num_stages=2", ...]``; each key is checked against the schema.
    """
    if source is None:
        data: dict = {}
    elif isinstance(source, Config):
        data = to_dict(source)
        data.pop("base", None)
    elif isinstance(source, dict):
        data = dict(source)
    else:
        data = _read_yaml(os.fspath(source))
    data = apply_overrides(data, overrides)
    data.pop("base", None)
    return from_dict(Config, data)


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
