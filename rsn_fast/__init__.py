"""rsn_fast: Residual Steps Network (ECCV 2020) with fused kernels for training and inference.

``rsn_fast.Predictor`` / ``rsn_fast.PersonPose`` (pose estimation on your own images) are imported on first
use, so ``import rsn_fast`` stays light and works without torch's extension being built.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "PersonPose", "__version__"]


def __getattr__(name: str):
    if name in ("Predictor", "PersonPose"):
        from rsn_fast import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'rsn_fast' has no attribute {name!r}")
