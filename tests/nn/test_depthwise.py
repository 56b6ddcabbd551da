"""DepthwiseConv2d: a drop-in for nn.Conv2d(C, C, k, padding=k // 2, groups=C) (state dicts, outputs, grads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsn_fast.nn import DepthwiseConv2d
from tests.conftest import TRITON_INTERPRET

GPU_TRITON = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def test_state_dict_round_trip_with_conv2d():
    torch_conv = nn.Conv2d(7, 7, 9, padding=4, groups=7)
    ours = DepthwiseConv2d(7, 9, backend="reference")
    ours.load_state_dict(torch_conv.state_dict(), strict=True)
    x = torch.randn(2, 7, 12, 10)
    torch.testing.assert_close(ours(x), torch_conv(x))
    torch_conv.load_state_dict(DepthwiseConv2d(7, 9, bias=True).state_dict(), strict=True)
    assert set(DepthwiseConv2d(7, 9, bias=False).state_dict()) == {"weight"}
    assert isinstance(ours, nn.Conv2d) and ours.groups == 7 and ours.padding == (4, 4)


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="kernel_size"):
        DepthwiseConv2d(4, 4)


@pytest.mark.skipif(
    not (TRITON_INTERPRET or GPU_TRITON), reason="Triton needs a GPU with cc >= 8.0 or TRITON_INTERPRET=1"
)
def test_training_step_matches_conv2d_channels_last():
    device = "cpu" if TRITON_INTERPRET else "cuda"
    torch_conv = nn.Conv2d(6, 6, 5, padding=2, groups=6).to(device)
    ours = DepthwiseConv2d(6, 5, backend="triton").to(device)
    ours.load_state_dict(torch_conv.state_dict())
    x = torch.randn(2, 6, 11, 9, device=device).to(memory_format=torch.channels_last)
    g = torch.randn(2, 6, 11, 9, device=device)
    for m in (torch_conv, ours):
        (m(x) * g).sum().backward()
    torch.testing.assert_close(ours.weight.grad, torch_conv.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, torch_conv.bias.grad, rtol=1e-4, atol=1e-4)
    assert ours(x).is_contiguous(memory_format=torch.channels_last)


def test_autocast_matches_conv2d():
    torch_conv = nn.Conv2d(5, 5, 3, padding=1, groups=5)
    ours = DepthwiseConv2d(5, 3, backend="reference")
    ours.load_state_dict(torch_conv.state_dict())
    x = torch.randn(2, 5, 8, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref, y = torch_conv(x), ours(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref)
    y.float().sum().backward()
    assert ours.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
