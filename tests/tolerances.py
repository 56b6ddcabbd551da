"""Shared test tolerances (append only)."""

import torch

# --- fused ops: kernel error vs float64 must stay within FACTOR x PyTorch's own error at that dtype + ATOL ---
# (flash-attention's rule: the kernel may be at most twice as far from the exact answer as eager PyTorch is)
LOWP_FACTOR = 2.0
LOWP_ATOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_within_torch_error(
    out: torch.Tensor,
    exact: torch.Tensor,
    torch_out: torch.Tensor,
    name: str,
    factor: float = LOWP_FACTOR,
    dtype: torch.dtype | None = None,
) -> None:
    """Relative L2 error of ``out`` vs the float64 ``exact`` ≤ factor × that of ``torch_out`` + atol of
    ``dtype`` (default out.dtype; pass the compute dtype for float32 results of low-precision math)."""
    assert out.shape == exact.shape, f"{name}: shape {tuple(out.shape)} != {tuple(exact.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    scale = exact.double().norm().clamp_min(1e-30)
    err = ((out.double() - exact.double()).norm() / scale).item()
    err_torch = ((torch_out.double() - exact.double()).norm() / scale).item()
    tol = factor * err_torch + LOWP_ATOL[dtype or out.dtype]
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:.3g} (torch's own error {err_torch:.3g})"


# --- elementwise ops that compute in float32 and round once to the output dtype (e.g. bn_add_relu) ---
# kernel vs reference: both round the same fp32 value, so they differ by at most ~1 ulp of the output dtype
# (an FMA on one side and not the other can flip the last bit). Keyed by the output dtype; use with
# torch.testing.assert_close(actual, expected, **ELEMENTWISE[dtype]).
ELEMENTWISE = {
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-3, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=8e-3),
}
