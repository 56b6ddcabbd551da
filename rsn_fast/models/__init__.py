"""RSN models: building from configs, checkpoint loading."""

from rsn_fast.models.builder import build_model
from rsn_fast.models.rsn import RSNPoseModel

__all__ = ["build_model", "RSNPoseModel"]
