"""The ``test:`` section. Owned by rsn_fast.evaluation; see RSN_SPEC.md section 12 and 16.4."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TestConfig:
    """Evaluation: flip test, decoding, boxes."""

    flip: bool = True
    decode_mode: str = "rsn"  # rsn | megvii | standard | dark
    blur_kernel: int = 5

    def validate(self) -> None:
        pass
