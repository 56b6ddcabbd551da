"""``build_model``: a config (root, model section or YAML path) to an :class:`RSNPoseModel`."""

from __future__ import annotations

import os

from rsn_fast.config import Config, ModelConfig, load_config
from rsn_fast.models.rsn import RSNPoseModel

__all__ = ["build_model", "model_config_of"]


def model_config_of(config: Config | ModelConfig | str | os.PathLike) -> ModelConfig:
    """The ``model:`` section of a root config, a model config, or a YAML file."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Config):
        return config.model
    if isinstance(config, (str, os.PathLike)):
        return load_config(config).model
    raise TypeError(
        f"build_model expects a Config, a ModelConfig or a YAML path, got {type(config).__name__}"
    )


def build_model(config: Config | ModelConfig | str | os.PathLike) -> RSNPoseModel:
    """Build the network described by ``config`` (validated first), with MMPose's initialisation.

    Returns a module with submodules ``backbone`` and ``head`` whose state-dict keys are MMPose 1.x's, and
    attributes ``num_stages`` and ``num_keypoints``.
    """
    cfg = model_config_of(config)
    cfg.validate()
    return RSNPoseModel(cfg)
