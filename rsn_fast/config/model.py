"""The ``model:`` section. Owned by rsn_fast.models; see RSN_SPEC.md sections 1-9 and 16."""

from __future__ import annotations

from dataclasses import dataclass, field

FUSED_MODES = ("auto", "off", "reference", "triton", "cuda")
FUSED_CHECK_MODES = ("error", "fallback", "off")


@dataclass
class ModelConfig:
    """Which RSN to build.

    Sizes are written (W, H) everywhere in the configs: ``input_size: [192, 256]`` is the paper's 256×192.
    """

    arch: str = "rsn"  # rsn | resnet (the OFF Res18 baseline)
    num_stages: int = 1
    num_blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_keypoints: int = 17
    input_size: tuple[int, int] = (192, 256)  # (W, H)
    unit_channels: int = 256
    res_top_channels: int = 64
    expand_times: int = 26
    # RSB branches (paper Table 3 ablation: 2..6); for num_steps != 4 the branch width is adapted so the
    # block's conv MACs stay closest to the 4-branch block's (rsn_fast.models.rsn.branch_width).
    num_steps: int = 4
    # rsb | baseline1 (no intra-level sums) | baseline2 (4 branches of three 3x3 convs, no sums, width adapted)
    block: str = "rsb"
    # none | se | cbam | prm (paper Table 4); se/cbam sit where the paper PRM sits (head.attention)
    attention: str = "none"
    prm_variant: str = "paper"  # paper | mmpose | official (RSN_SPEC 16.1, 16.8)
    in_channels: int = 3
    # Which implementation runs the RSBs, the PRM spatial gate and depthwise convs (rsn_fast.models.builder):
    # auto = the fused ops on CUDA devices with the dispatcher's backend, the plain modules on CPU;
    # off = the plain modules everywhere; reference | triton | cuda = the fused modules forced to that backend
    # (an error naming the op and the reason where it cannot run). Checkpoints are the same either way.
    # YAML reads a bare `off` as false: accepted as "off".
    fused: str | bool = "auto"
    # the self-check before the first step on a GPU (rsn_fast.selftest.check_model): error | fallback | off
    fused_check: str | bool = "error"

    def __post_init__(self) -> None:
        if self.fused is False:
            self.fused = "off"
        if self.fused_check is False:
            self.fused_check = "off"

    def validate(self) -> None:
        """Raise ValueError naming the field, the value and what is allowed."""
        choices = {
            "arch": ("rsn", "resnet"),
            "block": ("rsb", "baseline1", "baseline2"),
            "attention": ("none", "se", "cbam", "prm"),
            "prm_variant": ("paper", "mmpose", "official"),
            "fused": FUSED_MODES,
            "fused_check": FUSED_CHECK_MODES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"model.{name} must be one of {list(allowed)}, got {value!r}")
        if not 1 <= self.num_stages <= 8:
            raise ValueError(f"model.num_stages must be in 1..8, got {self.num_stages}")
        if len(self.num_blocks) != 4 or any(int(n) < 1 for n in self.num_blocks):
            raise ValueError(
                f"model.num_blocks must be 4 positive integers (one per unit), got {self.num_blocks}"
            )
        if self.num_keypoints < 1:
            raise ValueError(f"model.num_keypoints must be >= 1, got {self.num_keypoints}")
        if len(self.input_size) != 2 or any(s <= 0 or s % 32 for s in self.input_size):
            raise ValueError(
                f"model.input_size (W, H) must be two positive multiples of 32, got {list(self.input_size)}"
            )
        for name in ("unit_channels", "res_top_channels", "expand_times", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.num_steps <= 6:
            raise ValueError(f"model.num_steps (RSB branches) must be in 2..6, got {self.num_steps}")
        if self.arch == "resnet" and (self.block != "rsb" or self.num_steps != 4):
            raise ValueError(
                "model.block and model.num_steps apply to arch 'rsn' only; "
                f"arch 'resnet' needs block 'rsb' and num_steps 4, got {self.block!r} and {self.num_steps}"
            )
        if self.block == "baseline2" and self.num_steps != 4:
            raise ValueError(
                f"model.block 'baseline2' is defined with 4 branches, got num_steps {self.num_steps}"
            )
