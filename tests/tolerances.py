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


# --- per-element bounds for sums computed in one accumulation dtype and rounded once to the output dtype ---
# Unit roundoff u = 2^-p (p = significand bits incl. the implicit one): round-to-nearest moves a value by at most
# u * |value| (half an ulp). A sum of n products accumulated in any order with unit roundoff u_acc is within
# gamma_n * sum|terms| of the exact sum, gamma_n = n u_acc / (1 - n u_acc) (Higham, Accuracy and Stability of
# Numerical Algorithms, 2nd ed., eq. 3.5; an FMA only makes it smaller). Rounding that once to the output dtype
# adds u_out * |exact| (and at most half the dtype's smallest subnormal step). So, per element:
#   |out - exact| <= u_out |exact| + (1 + u_out) gamma_n sum|terms| + tiny_out,
# where exact is the float64 result from the same (already rounded) inputs, and sum|terms| is the same
# computation applied to |inputs| (every product is then >= 0, so the float64 result is the sum of |terms|).
# For fp16/bf16 outputs the first term is half an ulp; the second is below one more ulp unless the sum cancels.
UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
}
TINY = {
    torch.float64: 2.0**-1075,
    torch.float32: 2.0**-150,
    torch.float16: 2.0**-25,
    torch.bfloat16: 2.0**-134,
}


def assert_sum_bound(
    out: torch.Tensor,
    exact: torch.Tensor,
    abs_sum: torch.Tensor,
    n_terms: int,
    name: str,
    acc: torch.dtype = torch.float32,
) -> None:
    """Per-element bound above for a result accumulated in ``acc`` over ``n_terms`` terms (see derivation)."""
    assert out.shape == exact.shape == abs_sum.shape, (
        f"{name}: shapes {out.shape}, {exact.shape}, {abs_sum.shape}"
    )
    u_out, u = UNIT_ROUNDOFF[out.dtype], UNIT_ROUNDOFF[acc]
    gamma = n_terms * u / (1 - n_terms * u)
    e = exact.double().cpu()
    bound = u_out * e.abs() + (1 + u_out) * gamma * abs_sum.double().cpu() + TINY[out.dtype]
    err = (out.double().cpu() - e).abs()
    bad = err > bound
    if bad.any():
        i = int(torch.nonzero(bad.flatten())[0])
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements outside the rounding bound; first at flat index "
            f"{i}: got {out.flatten()[i].item():.8g}, exact {e.flatten()[i].item():.8g}, "
            f"bound {bound.flatten()[i].item():.3g}"
        )


def assert_rounded_once(out_lp: torch.Tensor, out_fp32: torch.Tensor, name: str) -> None:
    """A kernel that computes in fp32 and rounds once: its fp16/bf16 output equals round-to-nearest-even of the
    same kernel's fp32 result on the same (upcast) inputs (torch's .to() rounds to nearest even)."""
    want = out_fp32.to(out_lp.dtype)
    same = (out_lp == want) | (out_lp.isnan() & want.isnan())
    if not same.all():
        i = int(torch.nonzero(~same.flatten())[0])
        raise AssertionError(
            f"{name}: {int((~same).sum())} of {same.numel()} elements are not the nearest {out_lp.dtype} of the "
            f"fp32 result; first at {i}: {out_lp.flatten()[i].item()!r} vs {want.flatten()[i].item()!r} "
            f"(fp32 {out_fp32.flatten()[i].item()!r})"
        )


def assert_max_within_torch_error(
    out: torch.Tensor, exact: torch.Tensor, torch_out: torch.Tensor, name: str, ulps: float = 4.0
) -> None:
    """Per-element form of the rule above: max |out - exact| <= 2 max |torch_out - exact| + ulps * u_out *
    max |exact| (a few units in the last place of the output dtype at the tensor's scale), so one wrong element
    fails even when the norm would hide it."""
    e = exact.double().cpu()
    scale = e.abs().max().clamp_min(1e-30).item()
    err = (out.double().cpu() - e).abs().max().item()
    err_torch = (torch_out.double().cpu() - e).abs().max().item()
    tol = LOWP_FACTOR * err_torch + ulps * UNIT_ROUNDOFF[out.dtype] * scale
    assert err <= tol, (
        f"{name}: max error {err:.3g} > {tol:.3g} (torch's own {err_torch:.3g}, scale {scale:.3g})"
    )


def reduction_ulps(
    n_terms: int, out_dtype: torch.dtype, compute: torch.dtype | None = None, acc: torch.dtype = torch.float32
) -> float:
    """``ulps`` (units of u_out) for assert_max_within_torch_error when each output element is a sum of up to
    ``n_terms`` terms accumulated in ``acc`` (a chain of sums counts their lengths added: gamma_a + gamma_b <=
    gamma_(a+b)), each term computed in ``compute`` (default out_dtype; fp16/bf16 for float32 results of
    low-precision math, whose terms carry that dtype's roundings): 4 units of the compute dtype (two ulps: the
    kernel's and the reference's rounding) + n u_acc (gamma_n's first-order term, Higham eq. 3.5), both at the
    tensor's scale; cancellation below that scale is what the 2x-torch term covers (torch sums in fp32 too)."""
    u_c = UNIT_ROUNDOFF[compute or out_dtype]
    return (4.0 * u_c + n_terms * UNIT_ROUNDOFF[acc]) / UNIT_ROUNDOFF[out_dtype]
