"""``from rsn_fast.ops import <name>`` gives the op functions; their packages stay importable; export mode."""

import importlib
import inspect

import torch

import rsn_fast.ops as ops

NAMES = {
    "bn_add_relu": "rsn_fast.ops.bn_add_relu",
    "conv_bnact_stats": "rsn_fast.ops.rsb",
    "decode_heatmaps": "rsn_fast.ops.decode_heatmaps",
    "depthwise_conv2d": "rsn_fast.ops.depthwise_conv2d",
    "gaussian_targets": "rsn_fast.ops.gaussian_targets",
    "megvii_targets": "rsn_fast.ops.megvii_targets",
    "prm_spatial_gate": "rsn_fast.ops.prm_gate",
    "rsb_epilogue": "rsn_fast.ops.rsb",
}


def test_public_names_are_the_functions():
    for name, package in NAMES.items():
        fn = getattr(ops, name)
        assert inspect.isfunction(fn), f"rsn_fast.ops.{name} is {type(fn).__name__}, not the function"
        assert fn is getattr(importlib.import_module(package), name)
        assert name in ops.__all__
    # the packages (old import paths) still work, also after the names were bound to the functions
    from rsn_fast.ops.depthwise_conv2d import check_inputs
    from rsn_fast.ops.prm_gate import reference

    assert callable(check_inputs) and callable(reference.prm_spatial_gate)


def test_readme_op_table_uses_the_public_names():
    import os

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    for name in NAMES:
        assert f"| `{name}`" in readme or f"`{name}`, `" in readme or f", `{name}` (" in readme, name


def test_export_mode_calls_reference_only():
    x = torch.randn(1, 4, 7, 6, generator=torch.Generator().manual_seed(0))
    w = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(1))

    class M(torch.nn.Module):
        def forward(self, x):
            return ops.depthwise_conv2d(x, w, None)

    assert not ops.exporting()
    ep = torch.export.export(M(), (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "rsn_fast" in t], targets
    assert any("conv" in t for t in targets), targets
    torch.testing.assert_close(ep.module()(x), torch.nn.functional.conv2d(x, w, padding=1, groups=4))


def test_export_mode_dispatches_to_reference():
    """bn_add_relu picks its compiled C++ kernel (a torch.ops.rsn_fast op) on CPU; under export the reference."""
    import pytest

    from rsn_fast.ops.bn_add_relu import _dispatcher

    g = torch.Generator().manual_seed(2)
    x, scale, shift = (
        torch.randn(2, 4, 5, 3, generator=g),
        torch.rand(4, generator=g) + 0.5,
        torch.randn(4, generator=g),
    )
    if _dispatcher.choose(x, scale, shift).name != "cpp":
        pytest.skip("rsn_fast._C is not built: bn_add_relu already runs the reference")

    class M(torch.nn.Module):
        def forward(self, x):
            return ops.bn_add_relu(x, scale, shift)

    ep = torch.export.export(M(), (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "rsn_fast" in t], targets
    torch.testing.assert_close(
        ep.module()(x), torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    )
