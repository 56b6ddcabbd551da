"""The CUDA emulation build (csrc/emulation): launch checks, launch coverage, reverse thread order, and the bugs
it found. Runs only on an emulation build of rsn_fast._C (``RSN_FAST_CUDA_EMULATION=1``)."""

from __future__ import annotations

import pytest
import torch

from rsn_fast import _ext
from rsn_fast.ops._dispatch import REGISTRY
from rsn_fast.ops.decode_heatmaps import decode_heatmaps
from rsn_fast.ops.depthwise_conv2d import depthwise_conv2d
from rsn_fast.ops.prm_gate import prm_spatial_gate
from tests.backends import EMULATION, clear_emulated_launches, emulated_launches

pytestmark = pytest.mark.skipif(not EMULATION, reason="needs the CUDA emulation build of rsn_fast._C")


def _maps(shape, seed, dtype=torch.float32, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def test_extension_reports_emulation_and_auto_dispatch_never_picks_it():
    assert _ext.extension_is_emulation() and _ext.extension_has_cuda()
    for name, (dispatcher, example) in REGISTRY.items():
        assert dispatcher.choose(*example(torch.device("cpu"))).name != "cuda", name


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_depthwise_launch_covers_two_blocks_per_dimension_and_a_partial_block(channels_last):
    """The shapes the CUDA tests use really tile: >= 2 blocks along every grid dimension, a ragged edge."""
    x, w = _maps((2, 40, 19, 35), 1, channels_last=channels_last), _maps((40, 1, 3, 3), 2)
    clear_emulated_launches()
    y = depthwise_conv2d(x, w, None, 1, backend="cuda")
    torch.testing.assert_close(
        y, torch.nn.functional.conv2d(x, w, padding=1, groups=40), rtol=1e-5, atol=1e-5
    )
    (launch,) = [r for r in emulated_launches() if "dw_conv" in r["kernel"]]
    assert all(g >= 2 for g in launch["grid"]), launch


def _decode(hm, backend, mode="dark", k=11):
    n = hm.shape[0]
    centers = torch.full((n, 2), 100.0, dtype=torch.float64 if hm.dtype == torch.float64 else torch.float32)
    boxes = torch.full((n, 2), 200.0, dtype=centers.dtype)
    return decode_heatmaps(hm, centers, boxes, (hm.shape[3] * 4, hm.shape[2] * 4), mode, k, backend=backend)


@pytest.mark.parametrize("mode", ["dark", "megvii"])
def test_decode_static_plus_dynamic_shared_memory_over_48k(mode):
    """A 120x92 map (float32, 11-tap blur): 48,960 B of dynamic shared memory is under 48 KiB, but with the
    kernel's static shared memory the launch needs the opt-in attribute, which the launcher used not to set
    (it compared only the dynamic part): the emulator rejected the launch as a GPU does."""
    hm = _maps((1, 2, 92, 120), 3).abs()
    got, want = _decode(hm, "cuda", mode), _decode(hm, "cpp", mode)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
    (launch,) = [r for r in emulated_launches() if "decode_heatmaps" in r["file"]][-1:]
    assert launch["dynamic_smem"] <= 48 * 1024 < launch["dynamic_smem"] + launch["static_smem"]


def test_decode_over_the_opt_in_maximum_fails_clearly():
    """A map whose blur rows exceed even the 96 KiB opt-in maximum fails before the launch, with an error naming
    the op, the map, the bytes it needs, the device's limit and what to do (not "invalid argument")."""
    hm = _maps((1, 1, 200, 160), 4, torch.float64).abs()
    clear_emulated_launches()
    with pytest.raises(
        ValueError,
        match=r"rsn_fast::decode_heatmaps: a 200x160 Double heatmap \(mode 'dark', blur_kernel 11\) needs "
        r"2\d{5} bytes of shared memory per block .* maximum of 98304 bytes .*backend='cpp'",
    ):
        _decode(hm, "cuda")
    assert not [r for r in emulated_launches() if "decode_heatmaps" in r["file"]]


def _prm_inputs(shape, seed, channels_last):
    from tests.ops.test_prm_gate import make_inputs

    torch.manual_seed(seed)
    return make_inputs(*shape, k=5, channels_last=channels_last)


def _run_all_kernels(channels_last):
    """Outputs and gradients of one small case per CUDA kernel family (PRM train fwd+bwd covers the depthwise
    stats, pointwise, gate and backward kernels; the RSB kernels run in tests/nn/test_emulation_model.py)."""
    out = []
    acts, params, bufs = _prm_inputs((2, 33, 17, 33), 5, channels_last)  # tiles its depthwise conv too
    leaves = {k: v.requires_grad_() for k, v in {**acts, **params}.items() if v.is_floating_point()}
    y = prm_spatial_gate(**acts, **params, **bufs, training=True, backend="cuda")
    grads = torch.autograd.grad(y, list(leaves.values()), torch.randn_like(y))
    out += [y.detach(), *grads, *bufs.values()]
    x, w = _maps((2, 40, 19, 35), 6, channels_last=channels_last), _maps((40, 1, 5, 5), 7)
    x.requires_grad_()
    w.requires_grad_()
    yd = depthwise_conv2d(x, w, None, 2, backend="cuda")
    out += [yd.detach(), *torch.autograd.grad(yd, (x, w), torch.randn_like(yd))]
    out += list(_decode(_maps((2, 3, 13, 11), 8).abs(), "cuda"))
    from rsn_fast.ops.bn_add_relu import bn_add_relu
    from rsn_fast.ops.gaussian_targets import gaussian_targets
    from rsn_fast.ops.megvii_targets import megvii_targets

    xb = _maps((2, 5, 33, 9), 9, channels_last=channels_last)
    out.append(bn_add_relu(xb, _maps((5,), 10), _maps((5,), 11), _maps(xb.shape, 12), backend="cuda"))
    kp = torch.rand((3, 4, 2), generator=torch.Generator().manual_seed(13)) * torch.tensor([24.0, 32.0])
    wt = torch.ones(3, 4)
    out.append(megvii_targets(kp, wt, (24, 32), [7, 5], backend="cuda"))
    out.append(gaussian_targets(kp, wt, (24, 32), 2.0, backend="cuda"))
    return out


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_reverse_thread_order_gives_the_same_results(channels_last, monkeypatch):
    """Threads (and blocks) run in reverse order between barriers: a missing __syncthreads would let a thread
    read shared memory before its writer ran (poisoned NaN) and change the result."""
    forward = _run_all_kernels(channels_last)
    monkeypatch.setenv("RSN_FAST_EMULATION_REVERSE", "1")
    backward = _run_all_kernels(channels_last)
    for i, (a, b) in enumerate(zip(forward, backward)):
        assert torch.isfinite(a.float()).all(), i
        assert torch.equal(a, b), i


def test_batch_over_the_grid_y_limit_is_a_clear_error():
    """N is grid.y of the PRM and RSB kernels: N = 65536 is rejected before a launch, naming the limit."""
    z = torch.empty(65536, 1, 1, 1).expand(65536, 2, 1, 2)
    with pytest.raises(ValueError, match="grid.y limit 65535"):
        torch.ops.rsn_fast.rsb_channel_stats_cuda(z.contiguous())


@pytest.mark.parametrize(
    "case,match",
    [
        ("launch_bounds", r"bounded_kernel launched at .*selftest\.cu:\d+: 128 threads per block > the kernel's "
         r"__launch_bounds__\(64\)"),
        ("threads", r"plain_kernel launched at .*selftest\.cu:\d+: 1025 threads per block"),
        ("grid_z", r"plain_kernel .*grid.y or grid.z > 65535"),
        ("barrier", r"half_barrier_kernel .*__syncthreads was reached by only part of the block"),
        ("shuffle", r"half_shuffle_kernel .*a warp shuffle was reached by only part of a warp"),
        ("shared", r"big_shared_kernel .*static \+ dynamic shared memory 4096 \+ 46080 bytes > 48 KiB"),
    ],
)  # fmt: skip
def test_emulator_rejects_what_a_gpu_rejects(case, match):
    """Kernels that break a rule on purpose (csrc/emulation/selftest.cu): each error names kernel, file, line."""
    with pytest.raises(RuntimeError, match=match):
        _ext.require_extension().emulation_selftest(case)


def test_shared_memory_opt_in_and_poison_show_a_missing_barrier(monkeypatch):
    """With the opt-in attribute the 49 KiB launch runs; a read before the barrier sees the NaN poison in one
    thread order or the other."""
    mod = _ext.require_extension()
    assert mod.emulation_selftest("shared_opt_in")[:64] == [2.0] * 64
    seen = [mod.emulation_selftest("missing_barrier")[:32]]
    monkeypatch.setenv("RSN_FAST_EMULATION_REVERSE", "1")
    seen.append(mod.emulation_selftest("missing_barrier")[:32])
    assert any(v != v for out in seen for v in out), seen  # NaN: read before written


ASAN = EMULATION and getattr(_ext.require_extension(), "emulation_asan", lambda: False)()


@pytest.mark.skipif(not ASAN, reason="out-of-bounds accesses are caught by the AddressSanitizer emulation build "
                    "(RSN_FAST_EMULATION_ASAN=1), which the README test command's emulation pass uses")  # fmt: skip
def test_out_of_bounds_write_is_caught_by_asan():
    """A kernel that writes one element past its buffer (planted in csrc/emulation/selftest.cu) kills the
    process with AddressSanitizer's report; run in a child so this test session survives."""
    import os
    import subprocess
    import sys

    code = "from rsn_fast import _ext; _ext.require_extension().emulation_selftest('out_of_bounds')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode != 0, r.stderr[-2000:]
    assert "heap-buffer-overflow" in r.stderr and "out_of_bounds_kernel" in r.stderr, r.stderr[-2000:]


@pytest.mark.skipif(not ASAN, reason="needs the AddressSanitizer emulation build (RSN_FAST_EMULATION_ASAN=1)")
def test_asan_build_without_preload_gives_a_clear_error():
    """Without libasan preloaded, importing the ASan build would abort the interpreter ("ASan runtime does not
    come first"): the loader refuses first and says how to run it, and the process lives on."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    code = (
        "from rsn_fast import _ext\n"
        "try:\n    _ext.require_extension()\nexcept RuntimeError as e:\n    print('REFUSED', e)\n"
        "print('ALIVE')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "REFUSED" in r.stdout and "LD_PRELOAD" in r.stdout and "ALIVE" in r.stdout, (
        r.stdout + r.stderr[-2000:]
    )


# Grid dimensions each kernel tiles (the others are 1 by design: flat grid-stride kernels use only x).
TILED_DIMS = {
    "dw_conv_nchw_kernel": 3, "dw_conv_nhwc_kernel": 3, "dw_wgrad_nchw_kernel": 2, "pointwise_kernel": 2,
    "gate_eval_kernel": 2, "gate_bwd_kernel": 2, "bn_d_bwd_sums_kernel": 2,
}  # fmt: skip


def _cu_constants(path: str, *names: str) -> list[int]:
    """Integer constants of a kernel source (``constexpr int kName = 32``), so the tile model below follows it."""
    import re
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / path).read_text()
    return [int(re.search(rf"\b{n}\s*=\s*(\d+)", src).group(1)) for n in names]


def _tiles(size: int, tile: int) -> tuple[int, int]:
    return -(-size // tile), size % tile


# The small cases' depthwise convolutions, (N, C, H_out, W_out, stats): the PRM gate's forward (with its channel
# statistics) and input gradient, and the plain depthwise call of _run_all_kernels (5x5, padding 2) and its
# input gradient.
_DW_CASES = [(2, 33, 17, 33, True), (2, 33, 17, 33, False), (2, 40, 19, 35, False)]


def _assert_depthwise_tiles(launches, channels_last):
    """H and W are tiled inside folded or looped dimensions that the grid check cannot see: the NHWC conv folds
    N and H row blocks (8 rows with statistics) into grid.x; the weight gradient loops over (n, H tile, W tile)
    items inside each of its (C, chunk) blocks. From the launcher's own constants (depthwise_conv2d_cuda.cu),
    each case must have >= 2 tiles with a partial last one along H, W (and C in NHWC), and every recorded
    launch's grid must be one this model predicts (so the model cannot drift from the launcher)."""
    cu = "csrc/depthwise_conv2d/depthwise_conv2d_cuda.cu"
    tile_w, tile_h, strip, wg_h, wg_w = _cu_constants(
        cu, "kTileW", "kTileH", "kStrip", "kWgTileH", "kWgTileW"
    )
    stats_rows = 8  # nhwc_rows_per_block(true)
    conv, wgrad = set(), set()
    for n, c, h, w, stats in _DW_CASES:
        if channels_last:
            rows = stats_rows if stats else 1
            dims = {"H": _tiles(h, rows), "W": _tiles(w, 8 * strip), "C": _tiles(c, 32)}
            conv.add((n * dims["H"][0], dims["C"][0], dims["W"][0]))
        else:
            dims = {"H": _tiles(h, tile_h), "W": _tiles(w, tile_w)}
            conv.add((n * c, dims["H"][0], dims["W"][0]))
        if not stats:  # the weight gradient's (n, tile) items (NCHW; the NHWC path converts first)
            dims["wgrad H"], dims["wgrad W"] = _tiles(h, wg_h), _tiles(w, wg_w)
            items = n * dims["wgrad H"][0] * dims["wgrad W"][0]
            wgrad.add((c, min(-(-4 * 80 // c), items)))  # depthwise_conv2d_wgrad_chunks on 80 SMs
        for dim, (count, rest) in dims.items():
            if dim == "H" and channels_last and not stats:
                continue  # one row per block: every row is its own full tile
            assert count >= 2 and rest, (n, c, h, w, stats, dim, count, rest)
    kernel = "dw_conv_nhwc_kernel" if channels_last else "dw_conv_nchw_kernel"
    for r in launches:
        name = r["kernel"].split("<")[0]
        if name in (kernel, "dw_wgrad_nchw_kernel"):
            want = conv if name == kernel else wgrad
            assert tuple(r["grid"][: len(next(iter(want)))]) in want, (r, sorted(want))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_small_cases_launch_two_blocks_along_every_tiled_dimension(channels_last):
    """One-tile launches let tile-offset bugs through: the small emulation cases must tile every dimension."""
    clear_emulated_launches()
    _run_all_kernels(channels_last)
    seen = set()
    for r in emulated_launches():
        name = r["kernel"].split("<")[0]
        seen.add(name)
        dims = TILED_DIMS.get(name, 1)
        assert all(g >= 2 for g in r["grid"][:dims]) and all(g == 1 for g in r["grid"][dims:]), r
    _assert_depthwise_tiles(emulated_launches(), channels_last)
    # the PRM kernels' pixel tiles (grid.x) and their in-block channel loop, (2, 33, 17, 33) in _run_all_kernels
    import re
    from pathlib import Path

    (tile_p,) = _cu_constants("csrc/prm_gate/prm_gate_cuda.h", "kPrmTileP")
    src = (Path(__file__).resolve().parents[2] / "csrc/prm_gate/prm_gate_cuda.cu").read_text()
    step_cl, step_nchw = map(int, re.search(r"kCStep = CL \? (\d+) : (\d+)", src).groups())
    for count, rest in (_tiles(17 * 33, tile_p), _tiles(33, step_cl if channels_last else step_nchw)):
        assert count >= 2 and rest, (count, rest)
    dw = {"dw_conv_nhwc_kernel" if channels_last else "dw_conv_nchw_kernel", "dw_wgrad_nchw_kernel"}
    assert (
        dw
        | {
            "pointwise_kernel",
            "gate_kernel",
            "gate_bwd_kernel",
            "bn_d_bwd_sums_kernel",
            "bn_d_bwd_kernel",
            "kernel",
            "bn_add_relu_kernel",
            "megvii_targets_kernel",
            "gaussian_targets_kernel",
        }
        <= seen
    ), seen
