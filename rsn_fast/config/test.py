"""The ``test:`` section. Owned by rsn_fast.evaluation; see RSN_SPEC.md section 12 and 16.4."""

from __future__ import annotations

from dataclasses import dataclass

DECODE_MODES = ("rsn", "megvii", "standard", "dark")
SCORE_MODES = ("rsn", "mmpose")


def _fail(msg: str) -> None:
    # Imported lazily: rsn_fast.config imports this module first.
    from rsn_fast.config import ConfigError

    raise ConfigError(msg)


@dataclass
class TestConfig:
    """Evaluation: flip test, decoding, person scores, NMS and batching.

    ``decode_mode`` and ``blur_kernel`` go to ``rsn_fast.ops.decode_heatmaps`` (``rsn``: the official RSN rule,
    kernel 5 for COCO and 9 for MPII; ``megvii``: MMPose's, kernel 5; ``dark``: MMPose's DARK, kernel 11 for σ=2
    heatmaps). ``score_mode`` picks the person score: ``rsn`` = box score × mean of all K keypoint scores
    (RSN_SPEC 12.1), ``mmpose`` = box score × mean of the keypoint scores > ``keypoint_score_thr`` (12.2, MMPose's
    ``bbox_keypoint``). OKS-NMS is off in both references.
    """

    __test__ = False  # not a pytest test class despite the name

    flip: bool = True
    decode_mode: str = "rsn"  # rsn | megvii | standard | dark
    blur_kernel: int = 5
    score_mode: str = "rsn"  # rsn | mmpose
    keypoint_score_thr: float = 0.2  # used by score_mode=mmpose (and as the NMS visibility threshold if set)
    use_nms: bool = False
    oks_thr: float = 0.9  # OKS-NMS keeps detections with OKS <= oks_thr to an already kept one
    batch_size: int = 64  # per process
    pckh_thr: float = 0.5  # MPII: the headline PCKh threshold (PCKh@0.1 is always reported too)

    def validate(self) -> None:
        if self.decode_mode not in DECODE_MODES:
            _fail(f"test.decode_mode must be one of {DECODE_MODES}, got {self.decode_mode!r}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 != 1:
            _fail(f"test.blur_kernel must be an odd integer >= 1, got {self.blur_kernel}")
        if self.decode_mode in ("megvii", "dark") and self.blur_kernel < 3:
            _fail(
                f"test.blur_kernel must be >= 3 for decode_mode={self.decode_mode!r}, got {self.blur_kernel}"
            )
        if self.score_mode not in SCORE_MODES:
            _fail(f"test.score_mode must be one of {SCORE_MODES}, got {self.score_mode!r}")
        if not 0.0 <= self.oks_thr <= 1.0:
            _fail(f"test.oks_thr must be in [0, 1], got {self.oks_thr}")
        if self.batch_size < 1:
            _fail(f"test.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.pckh_thr:
            _fail(f"test.pckh_thr must be > 0, got {self.pckh_thr}")
