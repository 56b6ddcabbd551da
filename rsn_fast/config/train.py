"""The ``train:`` section. Owned by rsn_fast.engine; see RSN_SPEC.md section 11 and 16.5."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Optimizer, schedule, precision and checkpointing."""

    amp: str = "off"  # fp16 | bf16 | off
    channels_last: bool = False

    def validate(self) -> None:
        pass
