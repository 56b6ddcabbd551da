"""Fused Residual Steps Block (RSN_SPEC section 4) and :func:`convert`, which swaps RSBs in a model in place.

:class:`FusedRSB` has the parameters and state-dict keys of the model's RSB (MMPose names ``downsample``,
``conv_bn_relu1``, ``conv_bn_relu2_{i}_{j}``, ``conv_bn3``, each a ``.conv`` + ``.bn``) and computes the same
function, by one of these paths:

* ``backend="plain"``: the block's own module math (conv, BN, ReLU, sums, cat, one op each): the reference.
* training (any other backend): every conv is one :func:`rsn_fast.ops.rsb.conv_bnact_stats` call: the producer's
  BN scale/shift + ReLU + the step sum are applied as the conv reads its input, the BN batch statistics are
  produced as it writes; the four branch outputs go straight into the final 1x1 conv (concat on load, no cat);
  then one kernel for BN3 + residual (+ downsample BN) + ReLU (:func:`rsn_fast.ops.rsb.rsb_epilogue`, and one
  for its backward). Running statistics update as nn.BatchNorm2d does.
  Only the raw conv outputs are stored for backward; ``recompute=False`` also stores each conv's input.
* eval on CPU tensors: BN folded into the conv weights and a bias, ``F.conv2d`` (oneDNN adds the bias inside
  the conv), in-place ReLU and sums: the fastest CPU path we measured (benchmarks/bench_rsb.py --device cpu).
* eval elsewhere: the same fused op with folded weights, bias in the epilogue, ReLU + step sum on load, no
  statistics: one kernel launch per conv plus the final add + ReLU.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from rsn_fast.nn.conv_module import ConvModule
from rsn_fast.ops.rsb import conv_bnact_stats, fold_bn, rsb_epilogue

__all__ = ["FusedRSB", "convert", "is_rsb_like"]


def _conv_bn(m: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return m.conv, m.bn


class FusedRSB(nn.Module):
    """Drop-in fused RSB. Shapes: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).

    Args:
        in_channels, out_channels, stride: as the RSB.
        num_steps: number of branches n (4 in every released model).
        block: ``"rsb"`` (step sums), ``"baseline1"`` (no sums) or ``"baseline2"`` (three convs per branch).
        width: branch width b; default ``in_channels * expand_times // res_top_channels`` (26/52/104/208).
        backend: None (auto: cuda → triton → reference), "cuda", "triton", "reference", or "plain".
        recompute: recompute the conv inputs (BN-apply + ReLU + sum, elementwise) in backward instead of
            storing them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        num_steps: int = 4,
        block: str = "rsb",
        width: int | None = None,
        expand_times: int = 26,
        res_top_channels: int = 64,
        backend: str | None = None,
        recompute: bool = True,
        _build: bool = True,
    ) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.block = block
        self.width = in_channels * expand_times // res_top_channels if width is None else width
        self.lengths = [3] * num_steps if block == "baseline2" else list(range(1, num_steps + 1))
        self.stride = stride
        self.backend = backend
        self.recompute = recompute
        if not _build:
            return
        b = self.width
        self.downsample = (
            ConvModule(in_channels, out_channels, 1, stride=stride, relu=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.conv_bn_relu1 = ConvModule(in_channels, num_steps * b, 1, stride=stride)
        for i, length in enumerate(self.lengths):
            for j in range(length):
                self.add_module(f"conv_bn_relu2_{i + 1}_{j + 1}", ConvModule(b, b, 3, padding=1))
        self.conv_bn3 = ConvModule(num_steps * b, out_channels, 1, relu=False)

    @classmethod
    def from_module(cls, m: nn.Module, backend: str | None = None, recompute: bool = True) -> FusedRSB:
        """A FusedRSB that adopts ``m``'s submodules (same Parameter objects, so optimizers keep working)."""
        info = rsb_structure(m)
        if info is None:
            raise ValueError(f"{type(m).__name__} does not have the structure of an RSB")
        num_steps, lengths, width, stride, block = info
        f = cls(1, 1, stride, num_steps, block, width, backend=backend, recompute=recompute, _build=False)
        f.lengths = lengths
        # m's children in m's order (None entries too), so parameters, state-dict keys and optimizer parameter
        # indices keep MMPose's order whatever position m gives its downsample
        for name, child in m._modules.items():
            f._modules[name] = child
        if "downsample" not in f._modules:
            f.downsample = getattr(m, "downsample", None)
        f.train(m.training)
        return f

    def _convs(self):
        yield from enumerate(self.lengths)

    def _conv(self, i: int, j: int) -> nn.Module:
        return getattr(self, f"conv_bn_relu2_{i + 1}_{j + 1}")

    # ---------------------------------------------------------------- the plain module math (the reference)
    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        def cbr(m, t, relu=True):
            conv, bn = _conv_bn(m)
            t = bn(conv(t))
            return torch.relu(t) if relu else t

        identity = x if self.downsample is None else cbr(self.downsample, x, False)
        splits = torch.split(cbr(self.conv_bn_relu1, x), self.width, dim=1)
        fuse = self.block == "rsb"
        prev: list[torch.Tensor] = []
        last = []
        for i, length in self._convs():
            cur: list[torch.Tensor] = []
            for j in range(length):
                inp = splits[i] if j == 0 else cur[j - 1]
                if fuse and j < len(prev):
                    inp = inp + prev[j]
                cur.append(cbr(self._conv(i, j), inp))
            last.append(cur[-1])
            prev = cur
        return torch.relu(cbr(self.conv_bn3, torch.cat(last, dim=1), False) + identity)

    # ---------------------------------------------------------------- eval on CPU: folded BN, oneDNN convs
    def _forward_folded_torch(self, x: torch.Tensor) -> torch.Tensor:
        def folded(m):
            conv, bn = _conv_bn(m)
            return fold_bn(
                conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, conv.bias
            )

        def conv(m, t, relu):
            w, b = folded(m)
            c = m.conv
            y = F.conv2d(t, w.to(t.dtype), b.to(t.dtype), c.stride, c.padding)
            return torch.relu_(y) if relu else y

        identity = x if self.downsample is None else conv(self.downsample, x, False)
        splits = torch.split(conv(self.conv_bn_relu1, x, True), self.width, dim=1)
        fuse = self.block == "rsb"
        prev: list[torch.Tensor] = []
        last = []
        for i, length in self._convs():
            cur: list[torch.Tensor] = []
            for j in range(length):
                inp = splits[i] if j == 0 else cur[j - 1]
                if fuse and j < len(prev):
                    inp = inp + prev[j]
                cur.append(conv(self._conv(i, j), inp, True))
            last.append(cur[-1])
            prev = cur
        out = conv(self.conv_bn3, torch.cat(last, dim=1), False)
        return torch.relu_(out.add_(identity))

    # ---------------------------------------------------------------- fused op paths (train and eval)
    def _bn_affine(self, bn: nn.BatchNorm2d, s: torch.Tensor, q: torch.Tensor, count: int):
        """Per-channel (scale, shift) fp32 from batch sums, updating running stats exactly as nn.BatchNorm2d."""
        mean = s / count
        var = (q / count - mean * mean).clamp_min(0.0)
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                f = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                unbiased = var.detach() * (count / max(count - 1, 1))
                bn.running_mean.mul_(1 - f).add_(mean.detach().to(bn.running_mean.dtype), alpha=f)
                bn.running_var.mul_(1 - f).add_(unbiased.to(bn.running_var.dtype), alpha=f)
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * _acc(bn.weight)
        shift = -mean * scale
        if bn.bias is not None:
            shift = shift + _acc(bn.bias)
        return scale, shift

    def _forward_fused(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        x = x.to(dtype)
        kw = dict(backend=self.backend, save_input=not self.recompute)

        def run(m, srcs, scale, shift, relu, cat=False):
            """Conv of module m on its prologue'd sources -> (z, scale, shift) of m's BN (folded in eval)."""
            conv, bn = _conv_bn(m)
            if train:
                z, s, q = conv_bnact_stats(
                    srcs,
                    scale,
                    shift,
                    conv.weight.to(dtype),
                    None,
                    conv.stride[0],
                    conv.padding[0],
                    relu,
                    cat,
                    True,
                    **kw,
                )
                if conv.bias is not None:
                    raise NotImplementedError("FusedRSB: convs with a bias before BN are not supported")
                count = z.shape[0] * z.shape[2] * z.shape[3]
                a, b = self._bn_affine(bn, s, q, count)
                return z, a, b
            w, bias = fold_bn(
                conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, conv.bias
            )
            z, _, _ = conv_bnact_stats(
                srcs,
                None,
                None,
                w.to(dtype),
                bias.to(dtype),
                conv.stride[0],
                conv.padding[0],
                relu,
                cat,
                False,
                **kw,
            )
            return z, None, None

        def cat_vec(parts):
            return None if parts[0] is None else torch.cat(parts)

        b = self.width
        z1, a1, b1 = run(self.conv_bn_relu1, [x], None, None, False)
        fuse = self.block == "rsb"
        # each "value" is (raw tensor, scale, shift): act(raw * scale + shift) is the real activation
        prev: list[tuple] = []
        last: list[tuple] = []
        for i, length in self._convs():
            sl = slice(i * b, (i + 1) * b)
            cur: list[tuple] = []
            for j in range(length):
                v = (z1[:, sl], a1[sl] if a1 is not None else None, b1[sl] if b1 is not None else None)
                vals = [v if j == 0 else cur[j - 1]]
                if fuse and j < len(prev):
                    vals.append(prev[j])
                srcs = [t[0] for t in vals]
                cur.append(
                    run(
                        self._conv(i, j),
                        srcs,
                        cat_vec([t[1] for t in vals]),
                        cat_vec([t[2] for t in vals]),
                        True,
                    )
                )
            last.append(cur[-1])
            prev = cur
        z3, a3, b3 = run(
            self.conv_bn3,
            [t[0] for t in last],
            cat_vec([t[1] for t in last]),
            cat_vec([t[2] for t in last]),
            True,
            cat=True,
        )
        if self.downsample is not None:
            # in eval ad, bd are None: the downsample BN is folded into its conv, bias included
            r, ad, bd = run(self.downsample, [x], None, None, False)
        else:
            r, ad, bd = x, None, None
        if a3 is None:  # eval: BN3 folded into conv_bn3
            a3 = torch.ones(z3.shape[1], dtype=torch.float32, device=z3.device)
            b3 = torch.zeros_like(a3)
        # BN3 + downsample BN (or identity) + residual add + ReLU: one kernel each way
        return rsb_epilogue(z3, a3, b3, r, ad, bd, backend=self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "plain":
            return self._forward_plain(x)
        if not self.training and x.device.type == "cpu" and self.backend is None:
            return self._forward_folded_torch(x)
        return self._forward_fused(x, self.training)


def _acc(t: torch.Tensor) -> torch.Tensor:
    """t in the accumulation type: float32, or float64 for float64 tensors."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def rsb_structure(m: nn.Module) -> tuple[int, list[int], int, int, str] | None:
    """(num_steps, lengths, width, stride, block) when m has an RSB's submodule names and shapes, else None.

    Detection is by names (``conv_bn_relu1``, ``conv_bn_relu2_{i}_{j}``, ``conv_bn3``, optional ``downsample``,
    each with ``.conv`` (Conv2d) and ``.bn`` (BatchNorm2d)), so MMPose's ``RSB`` and ours both match.
    """
    names = ("conv_bn_relu1", "conv_bn3", "conv_bn_relu2_1_1")
    for n in names:
        sub = getattr(m, n, None)
        if not isinstance(getattr(sub, "conv", None), nn.Conv2d) or not isinstance(
            getattr(sub, "bn", None), nn.BatchNorm2d
        ):
            return None
    lengths = []
    while hasattr(m, f"conv_bn_relu2_{len(lengths) + 1}_1"):
        i = len(lengths) + 1
        j = 0
        while hasattr(m, f"conv_bn_relu2_{i}_{j + 1}"):
            j += 1
        lengths.append(j)
    num_steps = len(lengths)
    width = m.conv_bn_relu2_1_1.conv.in_channels
    c1 = m.conv_bn_relu1.conv
    stride = c1.stride[0]
    if c1.out_channels != num_steps * width or c1.kernel_size != (1, 1):
        return None
    block = getattr(m, "block", "rsb")
    if not isinstance(block, str) or block not in ("rsb", "baseline1", "baseline2"):
        block = "rsb"
    expected = [3] * num_steps if block == "baseline2" else list(range(1, num_steps + 1))
    if lengths != expected:
        return None
    return num_steps, lengths, width, stride, block


def is_rsb_like(m: nn.Module) -> bool:
    """True when :func:`convert` would replace m."""
    return not isinstance(m, FusedRSB) and rsb_structure(m) is not None


def convert(model: nn.Module, backend: str | None = None, recompute: bool = True) -> nn.Module:
    """Replace every RSB-like submodule of ``model`` (see :func:`rsb_structure`) by a :class:`FusedRSB`, in place.

    The FusedRSBs adopt the original submodules, so parameters, buffers, state-dict keys and optimizer
    references stay the same. Blocks whose convs have a bias before BN (official-code style) are left alone
    with a warning. Returns ``model`` (or a FusedRSB when ``model`` itself is an RSB).
    """
    if is_rsb_like(model):
        return FusedRSB.from_module(model, backend, recompute)
    for name, child in list(model.named_children()):
        if is_rsb_like(child):
            if any(
                getattr(c, "conv", None) is not None and c.conv.bias is not None for c in child.children()
            ):
                warnings.warn(f"convert: {name} has conv biases before BN; left unfused", stacklevel=2)
                continue
            setattr(model, name, FusedRSB.from_module(child, backend, recompute))
        else:
            convert(child, backend, recompute)
    return model
