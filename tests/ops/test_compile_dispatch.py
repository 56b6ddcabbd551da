"""Automatic backend choice (no backend=, no RSN_FAST_BACKEND) must trace under torch.compile(fullgraph=True).

The per-op tests compile with an explicit backend; this file covers the automatic path, which reads the
extension's cached facts (rsn_fast._ext) and must not call into the pybind module while dynamo traces.
"""

import pytest
import torch

from rsn_fast.ops import bn_add_relu, decode_heatmaps, megvii_targets
from rsn_fast.ops.depthwise_conv2d import depthwise_conv2d


@pytest.fixture(autouse=True)
def _auto_backend(monkeypatch):
    monkeypatch.delenv("RSN_FAST_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _check_fullgraph(fn, *args):
    expected = fn(*args)
    got = torch.compile(fn, fullgraph=True, backend="eager")(*args)
    for e, g in zip(
        expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)
    ):
        torch.testing.assert_close(g, e, equal_nan=True)


def test_bn_add_relu_auto():
    x, s, b, r = torch.randn(2, 5, 4, 3), torch.rand(5) + 0.5, torch.randn(5), torch.randn(2, 5, 4, 3)
    _check_fullgraph(lambda x: bn_add_relu(x, s, b, r), x)


def test_decode_heatmaps_auto():
    hm, fl = torch.randn(2, 17, 16, 12), torch.randn(2, 17, 16, 12)
    centers, sizes = torch.rand(2, 2) * 100, torch.rand(2, 2) * 50 + 10
    pairs = [(1, 2), (3, 4)]
    _check_fullgraph(
        lambda h, f: decode_heatmaps(h, centers, sizes, (48, 64), flipped=f, flip_pairs=pairs), hm, fl
    )


def test_megvii_targets_auto():
    kp = torch.rand(2, 17, 2) * torch.tensor([12.0, 16.0])
    w = (torch.rand(2, 17) > 0.2).float()
    _check_fullgraph(lambda k: megvii_targets(k, w, (12, 16), [7, 5]), kp)


def test_depthwise_conv2d_auto():
    x, wt = torch.randn(2, 6, 9, 7), torch.randn(6, 1, 5, 5)
    _check_fullgraph(lambda x: depthwise_conv2d(x, wt), x)
