"""Keypoint sets: names, flip pairs, skeleton, OKS sigmas and the upper-body joints used by half-body crops.

COCO (17) and MPII (16) are built in; any other set comes from the ``data.keypoint_set`` config section
(``data.keypoints: custom``). Everything downstream (flip, targets, loss, evaluation) reads the set from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["KeypointSet", "COCO", "MPII", "get_keypoint_set", "builtin_keypoint_sets"]


@dataclass(frozen=True)
class KeypointSet:
    """A keypoint definition.

    Attributes:
        name: "coco", "mpii" or the custom set's name.
        names: K joint names.
        flip_pairs: (i, j) pairs swapped by a horizontal flip, 0-based, each joint in at most one pair.
        skeleton: (i, j) limbs, 0-based (for drawing and the synthetic data set).
        sigmas: (K,) OKS sigmas.
        upper_body: joint ids of the upper body for half-body crops (MMPose's definition for COCO: 0-10).
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: np.ndarray = field(compare=False)
    upper_body: tuple[int, ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def lower_body(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_keypoints) if i not in set(self.upper_body))

    def flip_index(self) -> np.ndarray:
        """(K,) permutation that swaps every flip pair (an involution)."""
        perm = np.arange(self.num_keypoints)
        for i, j in self.flip_pairs:
            perm[i], perm[j] = j, i
        return perm

    def check(self) -> None:
        """Raise ValueError when the definition is inconsistent."""
        k = self.num_keypoints
        if k == 0:
            raise ValueError(f"keypoint set '{self.name}' has no keypoint names")
        if len(set(self.names)) != k:
            raise ValueError(f"keypoint set '{self.name}': keypoint names repeat")
        seen: set[int] = set()
        for p in self.flip_pairs:
            if len(p) != 2 or p[0] == p[1] or not all(0 <= i < k for i in p):
                raise ValueError(f"keypoint set '{self.name}': bad flip pair {tuple(p)} (0-based, K={k})")
            if seen & set(p):
                raise ValueError(f"keypoint set '{self.name}': joint in two flip pairs {tuple(p)}")
            seen |= set(p)
        for p in self.skeleton:
            if len(p) != 2 or not all(0 <= i < k for i in p):
                raise ValueError(f"keypoint set '{self.name}': bad skeleton limb {tuple(p)} (0-based, K={k})")
        if self.sigmas.shape != (k,):
            raise ValueError(f"keypoint set '{self.name}': {self.sigmas.shape[0]} sigmas for {k} keypoints")
        if not all(0 <= i < k for i in self.upper_body):
            raise ValueError(f"keypoint set '{self.name}': upper_body ids must be in [0, {k})")


COCO = KeypointSet(
    name="coco",
    names=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # The COCO person category's skeleton (1-based in the json), made 0-based.
    skeleton=tuple(
        (a - 1, b - 1)
        for a, b in (
            (16, 14),
            (14, 12),
            (17, 15),
            (15, 13),
            (12, 13),
            (6, 12),
            (7, 13),
            (6, 7),
            (6, 8),
            (7, 9),
            (8, 10),
            (9, 11),
            (2, 3),
            (1, 2),
            (1, 3),
            (2, 4),
            (3, 5),
            (4, 6),
            (5, 7),
        )
    ),  # fmt: skip
    sigmas=np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
    )
    / 10.0,
    upper_body=tuple(range(11)),
)

MPII = KeypointSet(
    name="mpii",
    names=(
        "right_ankle",
        "right_knee",
        "right_hip",
        "left_hip",
        "left_knee",
        "left_ankle",
        "pelvis",
        "thorax",
        "upper_neck",
        "head_top",
        "right_wrist",
        "right_elbow",
        "right_shoulder",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1),
        (1, 2),
        (2, 6),
        (6, 3),
        (3, 4),
        (4, 5),
        (6, 7),
        (7, 8),
        (8, 9),
        (7, 12),
        (12, 11),
        (11, 10),
        (7, 13),
        (13, 14),
        (14, 15),
    ),  # fmt: skip
    sigmas=np.array(
        [
            0.089,
            0.083,
            0.107,
            0.107,
            0.083,
            0.089,
            0.026,
            0.026,
            0.026,
            0.026,
            0.062,
            0.072,
            0.179,
            0.179,
            0.072,
            0.062,
        ]
    ),  # fmt: skip
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)


def builtin_keypoint_sets() -> dict[str, KeypointSet]:
    return {"coco": COCO, "mpii": MPII}


def get_keypoint_set(cfg: Any) -> KeypointSet:
    """The keypoint set a config asks for.

    Args:
        cfg: a ``DataConfig`` (or a root ``Config``, whose ``data`` section is used), or a builtin name.
    """
    if isinstance(cfg, str):
        name, custom = cfg, None
    else:
        data = getattr(cfg, "data", cfg)
        name, custom = data.keypoints, data.keypoint_set
    if name in builtin_keypoint_sets():
        return builtin_keypoint_sets()[name]
    if name != "custom":
        raise ValueError(f"unknown keypoint set '{name}'; choose coco, mpii or custom")
    k = len(custom.names)
    sigmas = np.asarray(custom.sigmas if custom.sigmas else [0.05] * k, dtype=np.float64)
    ks = KeypointSet(
        name=custom.name,
        names=tuple(custom.names),
        flip_pairs=tuple(tuple(p) for p in custom.flip_pairs),
        skeleton=tuple(tuple(p) for p in custom.skeleton),
        sigmas=sigmas,
        upper_body=tuple(custom.upper_body),
    )
    ks.check()
    return ks
