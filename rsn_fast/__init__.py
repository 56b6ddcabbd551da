"""rsn_fast: Residual Steps Network (ECCV 2020) with fused kernels for training and inference."""

__version__ = "0.1.0"
