"""A whole RSN-18 with the PRM on, every fused op on the emulated CUDA backend (csrc/emulation), against the plain
model: train-mode forward + backward (outputs, every gradient, running statistics) and eval-mode forward."""

from __future__ import annotations

import copy

import pytest
import torch

from rsn_fast.nn import FusedRSB, PoseRefineMachine, convert
from tests.backends import EMULATION, clear_emulated_launches, emulated_launches
from tests.tolerances import assert_within_torch_error

pytestmark = pytest.mark.skipif(not EMULATION, reason="needs the CUDA emulation build of rsn_fast._C")


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
            m.running_mean.data = 0.1 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var.data = 0.5 + torch.rand(m.running_var.shape, generator=g)


def _outputs(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def test_rsn18_prm_on_emulated_cuda_equals_plain_model():
    """Error vs float64 <= 4 x PyTorch's own float32 error of the same math (+ atol), for each output, input
    gradient, parameter gradient and running statistic (613 tensors). Why 4, not the kernels' 2: the last stage's
    feature maps are 2x1 pixels, where float32 batch statistics are ill-conditioned and both sides have 2-10%
    summation-order error; measured here: median ratio 1.04, worst 3.6 (a BN bias gradient of layer4). A wrong
    tile, index or barrier gives errors of order 1, far above any such bound.

    4 is not derived, and 2 is not reachable with this baseline: where one ill-conditioned statistic dominates a
    tensor's error, kernel and torch errors are two draws of about one degree of freedom, whose ratio is heavy-
    tailed (for two Gaussian draws, |ratio| > 2 with probability 0.30 and > 4 with 0.16). Measured (#11): with
    torch's error the worst of 4 batch orders (the same math, other summation orders) the largest needed factor
    falls from 3.57 to 2.08 (norm), and per element from 14.8 to 2.5, so the kernels' per-element bounds are
    asserted in the op tests (tests/ops), not here; 3 more float32 runs would cost ~28 s."""
    from rsn_fast.models import build_model

    torch.manual_seed(0)
    plain = build_model("configs/rsn18_coco_256x192_prm.yaml")
    _randomise_bn(plain, 1)
    for m in plain.modules():
        if isinstance(m, PoseRefineMachine):
            m.backend = "reference"
    # the same math in PyTorch: the converted model on the reference backend, in float64 (the truth; it equals
    # the plain model, test_fused_rsb.py::test_convert_whole_rsn18) and in float32 (PyTorch's own error)
    same_math = convert(copy.deepcopy(plain), backend="reference")
    exact = copy.deepcopy(same_math).double()
    model = copy.deepcopy(plain)
    convert(model, backend="cuda")
    prms = [m for m in model.modules() if isinstance(m, PoseRefineMachine)]
    assert sum(isinstance(m, FusedRSB) for m in model.modules()) == 8 and prms
    for m in prms:
        m.backend = "cuda"
    x = torch.randn(8, 3, 64, 32).contiguous(memory_format=torch.channels_last)
    clear_emulated_launches()
    for train in (True, False):
        results = []
        for net, dtype in ((model, torch.float32), (exact, torch.float64), (same_math, torch.float32)):
            net.train(train)
            xi = x.detach().to(dtype).clone().requires_grad_(train)
            with torch.set_grad_enabled(train):
                outs = _outputs(net(xi))
            if train:
                g = torch.Generator().manual_seed(2)
                w = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype) for o in outs]
                sum((o * v).sum() for o, v in zip(outs, w)).backward()
                grads = [xi.grad] + [p.grad for _, p in net.named_parameters()]
                bufs = [b for n, b in net.named_buffers() if "running" in n]
            else:
                grads, bufs = [], []
            results.append([o.detach() for o in outs] + grads + bufs)
        names = [f"output {i}" for i in range(len(results[0]) - len(grads) - len(bufs))]
        names += ["input grad"] * bool(grads) + [f"grad {n}" for n, _ in model.named_parameters()] * bool(
            grads
        )
        names += [n for n, _ in model.named_buffers() if "running" in n] * bool(bufs)
        assert len(names) == len(results[0])
        for name, got, want, base in zip(names, *results):
            if want is None:  # a parameter the forward does not use: no gradient anywhere
                assert got is None and base is None, name
                continue
            assert got is not None, name
            assert_within_torch_error(got, want, base, f"{'train' if train else 'eval'} {name}", factor=4.0)
    kernels = {r["kernel"].split("<")[0] for r in emulated_launches()}
    # the RSB prologue/statistics/epilogue and the PRM gate kernels all ran on the emulator
    for name in (
        "prologue_kernel",
        "channel_pass_kernel",
        "epilogue_kernel",
        "pointwise_kernel",
        "gate_bwd_kernel",
    ):
        assert name in kernels, (name, sorted(kernels))
