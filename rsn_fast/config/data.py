"""The ``data:`` section. Owned by rsn_fast.data; see RSN_SPEC.md sections 10, 11, 16."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where the data comes from and how it is augmented."""

    dataset: str = "coco"  # coco | mpii

    def validate(self) -> None:
        pass
