"""compile_for_cpu_inference: folded, fused and inductor-compiled RSN equals the eager model in eval mode."""

import os

import pytest
import torch

from rsn_fast.config import ModelConfig
from rsn_fast.models import build_model
from rsn_fast.nn import FusedRSB, compile_for_cpu_inference


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="no Triton here; runs once, in the non-interpreter pass"
)
def test_compiled_cpu_inference_matches_eager():
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_size=(64, 64))).eval()
    for m in model.modules():  # non-trivial statistics so that the BN folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    fast = compile_for_cpu_inference(model)
    assert not any(isinstance(m, FusedRSB) for m in model.modules())  # the original is left alone
    assert any(isinstance(m, FusedRSB) for m in fast.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == want.shape == (2, 17, 16, 16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
