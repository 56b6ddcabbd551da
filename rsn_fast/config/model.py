"""The ``model:`` section. Owned by rsn_fast.models; see RSN_SPEC.md sections 1-9 and 16."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    num_steps: int = 4  # RSB branches (paper Table 3 ablation: 2..6)
    block: str = "rsb"  # rsb | baseline1 | baseline2 (paper Table 2)
    attention: str = "none"  # none | se | cbam | prm (paper Table 4)
    prm_variant: str = "paper"  # paper | mmpose | official (RSN_SPEC 16.1, 16.8)
    in_channels: int = 3

    def validate(self) -> None:
        # Filled in by the model owner; kept here so loading stays strict.
        pass
