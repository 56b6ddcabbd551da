"""RSN models: building from configs, checkpoint loading."""

from rsn_fast.models.builder import build_model
from rsn_fast.models.checkpoint import CheckpointError, convert_official_state_dict, load_checkpoint
from rsn_fast.models.rsn import RSNPoseModel

__all__ = ["build_model", "load_checkpoint", "convert_official_state_dict", "CheckpointError", "RSNPoseModel"]
