"""Thin calls into the fused PRM gate CUDA kernels (csrc/prm_gate): the "cuda" kernel set of fused.py.

Same functions and return conventions as triton.py (see there and csrc/prm_gate/prm_gate_cuda.h for the math).
Importing this needs no extension; calling it does.
"""

from __future__ import annotations

import torch

from rsn_fast import _ext

# the op whose presence says the extension has the fused gate kernels (dispatch reasons)
PROBE_OP = "prm_gate_pointwise_cuda"


def _ops():
    _ext.require_extension()
    return torch.ops.rsn_fast


def gate_eval(o1, o2, u, w_folded, shift_d, pw, bnp):
    """One-kernel eval forward. w_folded float32 (C, k*k), shift_d/pw float32 (C,), bnp float32 (2,)."""
    return _ops().prm_gate_eval_cuda(o1, o2, u, w_folded, shift_d, pw, bnp)


def pointwise(z, scale_shift_d, pw):
    """p (N, H*W) float32 and its (sum, sum of squares) in float64 (2,)."""
    return _ops().prm_gate_pointwise_cuda(z, scale_shift_d, pw)


def gate(p, bnp, o1, o2):
    """out = o1 * (1 + o2 * sigmoid(relu(p * bnp[0] + bnp[1]))), o1's dtype and layout."""
    return _ops().prm_gate_gate_cuda(p, bnp, o1, o2)


def gate_backward(grad, o1, o2, p, bnp4):
    """(do1, do2 (N, C) float32, dq (N, H*W) float32, sums (2,) float64 of dq and dq * p_hat)."""
    return _ops().prm_gate_gate_bwd_cuda(grad, o1, o2, p, bnp4)


def bn_d_backward_sums(z, dp, cv, pw):
    """float64 (3, C): sums over (n, h, w) of dp * a, dr and dr * z_hat."""
    return _ops().prm_gate_bn_d_bwd_sums_cuda(z, dp, cv, pw)


def bn_d_backward(z, dp, cv, pw):
    """dz (N, C, H, W) in z's dtype and layout."""
    return _ops().prm_gate_bn_d_bwd_cuda(z, dp, cv, pw)
