"""Pure-torch bn_add_relu: the specification, runs on any device."""

from __future__ import annotations

import torch


def bn_add_relu_ref(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    residual: torch.Tensor | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """y = relu(x * scale[c] + shift[c] (+ residual)), computed in float32 (float64 stays float64).

    Args:
        x: (N, C, H, W), any layout.
        scale: (C,) folded BN scale, gamma / sqrt(running_var + eps).
        shift: (C,) folded BN shift, beta - running_mean * scale.
        residual: (N, C, H, W) like x, or None.
        relu: apply the ReLU.

    Returns:
        (N, C, H, W) in x's dtype.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = x.shape[1]
    y = x.to(compute) * scale.to(compute).view(1, c, 1, 1) + shift.to(compute).view(1, c, 1, 1)
    if residual is not None:
        y = y + residual.to(compute)
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype)
