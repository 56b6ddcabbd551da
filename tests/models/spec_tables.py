"""Key/shape tables written from RSN_SPEC 14.1 / 14.3 / 14.4, and a plain functional forward of the official
network over an official-format state dict (spec 3-8). Independent of rsn_fast.models on purpose: the tests
compare our model and loader against these."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

UNIT_OUT = [64, 128, 256, 512]
UP_IN = [512, 256, 128, 64]  # up1..up4


def conv_units(num_blocks, num_stages, k):
    """Ordered list of (mm_prefix, off_prefix, conv weight shape) for every conv+BN of the network."""
    units = [("backbone.top.top.0", "top.conv", [64, 3, 7, 7])]
    for s in range(num_stages):
        mb, ob = f"backbone.multi_stage_rsn.{s}", f"stage{s}"
        cin = 64
        for u, (cout, nb) in enumerate(zip(UNIT_OUT, num_blocks)):
            for n in range(nb):
                b = cin * 26 // 64
                mp, op = f"{mb}.downsample.layer{u + 1}.{n}", f"{ob}.downsample.layer{u + 1}.{n}"
                if n == 0 and u > 0:
                    units.append((f"{mp}.downsample", f"{op}.downsample", [cout, cin, 1, 1]))
                units.append((f"{mp}.conv_bn_relu1", f"{op}.conv_bn_relu1", [4 * b, cin, 1, 1]))
                for i in range(1, 5):
                    for j in range(1, i + 1):
                        units.append(
                            (f"{mp}.conv_bn_relu2_{i}_{j}", f"{op}.conv_bn_relu2_{i}_{j}", [b, b, 3, 3])
                        )
                units.append((f"{mp}.conv_bn3", f"{op}.conv_bn_relu3", [cout, 4 * b, 1, 1]))
                cin = cout
        last = s == num_stages - 1
        for u in range(1, 5):
            c = UP_IN[u - 1]
            mp, op = f"{mb}.upsample.up{u}", f"{ob}.upsample.up{u}"
            units.append((f"{mp}.in_skip", f"{op}.u_skip", [256, c, 1, 1]))
            if u > 1:
                units.append((f"{mp}.up_conv", f"{op}.up_conv", [256, 256, 1, 1]))
            if not last:
                units.append((f"{mp}.out_skip1", f"{op}.skip1", [c, c, 1, 1]))
                units.append((f"{mp}.out_skip2", f"{op}.skip2", [c, 256, 1, 1]))
                if u == 4:
                    units.append((f"{mp}.cross_conv", f"{op}.cross_conv", [64, 256, 1, 1]))
    for s in range(num_stages):
        for u in range(1, 5):
            i = 4 * s + u - 1
            op = f"stage{s}.upsample.up{u}"
            units.append((f"head.predict_layers.{i}.conv_layers.0", f"{op}.res_conv1", [256, 256, 1, 1]))
            units.append((f"head.predict_layers.{i}.conv_layers.1", f"{op}.res_conv2", [k, 256, 3, 3]))
    return units


BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def mm_table(num_blocks, num_stages, k):
    """MMPose 1.x key -> shape, in state-dict order."""
    out = OrderedDict()
    for mm, _, shape in conv_units(num_blocks, num_stages, k):
        out[f"{mm}.conv.weight"] = shape
        for b in BN_KEYS:
            out[f"{mm}.bn.{b}"] = [] if b == "num_batches_tracked" else [shape[0]]
    return out


def random_state_dict(table, conv_bias=False, gen=None):
    """Random but well-scaled values for a key -> shape table (official tables get conv biases)."""
    sd = OrderedDict()
    for key, shape in table.items():
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5
            if conv_bias:
                sd[key[: -len("weight")] + "bias"] = torch.randn(shape[0], generator=gen) * 0.2
        elif key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith(("running_var", "bn.weight")):
            sd[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=gen) * 0.2
    return sd


def off_table(num_blocks, num_stages, k):
    """Official key -> shape (conv biases added by ``random_state_dict(conv_bias=True)``)."""
    out = OrderedDict()
    for _, off, shape in conv_units(num_blocks, num_stages, k):
        out[f"{off}.conv.weight"] = shape
        for b in BN_KEYS:
            out[f"{off}.bn.{b}"] = [] if b == "num_batches_tracked" else [shape[0]]
    return out


def _cbr(sd, p, x, stride=1, pad=0, relu=True):
    y = F.conv2d(x, sd[f"{p}.conv.weight"], sd.get(f"{p}.conv.bias"), stride, pad)
    y = F.batch_norm(
        y,
        sd[f"{p}.bn.running_mean"],
        sd[f"{p}.bn.running_var"],
        sd[f"{p}.bn.weight"],
        sd[f"{p}.bn.bias"],
        False,
    )
    return F.relu(y) if relu else y


def _off_block(sd, p, x, stride, has_down):
    y = _cbr(sd, f"{p}.conv_bn_relu1", x, stride)
    s1, s2, s3, s4 = torch.chunk(y, 4, dim=1)
    c = lambda name, t: _cbr(sd, f"{p}.conv_bn_relu2_{name}", t, 1, 1)  # noqa: E731
    y11 = c("1_1", s1)
    y21 = c("2_1", s2 + y11)
    y22 = c("2_2", y21)
    y31 = c("3_1", s3 + y21)
    y32 = c("3_2", y31 + y22)
    y33 = c("3_3", y32)
    y41 = c("4_1", s4 + y31)
    y42 = c("4_2", y41 + y32)
    y43 = c("4_3", y42 + y33)
    y44 = c("4_4", y43)
    out = _cbr(sd, f"{p}.conv_bn_relu3", torch.cat([y11, y22, y33, y44], 1), relu=False)
    ident = _cbr(sd, f"{p}.downsample", x, stride, relu=False) if has_down else x
    return F.relu(out + ident)


def off_forward(sd, x, num_blocks, num_stages):
    """Eval-mode output of the official network (OFF names, conv biases) for input x (N,3,H,W)."""
    h, w = x.shape[2] // 4, x.shape[3] // 4
    x = F.max_pool2d(_cbr(sd, "top.conv", x, 2, 3), 3, 2, 1)
    skip1 = skip2 = None
    for s in range(num_stages):
        feats = []
        for u in range(4):
            for n in range(num_blocks[u]):
                stride = 2 if (u > 0 and n == 0) else 1
                x = _off_block(sd, f"stage{s}.downsample.layer{u + 1}.{n}", x, stride, u > 0 and n == 0)
            if s > 0:
                x = x + skip1[u] + skip2[u]
            feats.append(x)
        xs = feats[::-1]
        out, res, s1s, s2s, cross = None, None, [], [], None
        for u in range(4):
            p = f"stage{s}.upsample.up{u + 1}"
            o = _cbr(sd, f"{p}.u_skip", xs[u], relu=False)
            if u > 0:
                up = F.interpolate(out, size=xs[u].shape[-2:], mode="bilinear", align_corners=True)
                o = o + _cbr(sd, f"{p}.up_conv", up, relu=False)
            out = F.relu(o)
            r = _cbr(sd, f"{p}.res_conv2", _cbr(sd, f"{p}.res_conv1", out), 1, 1, relu=False)
            res = F.interpolate(r, size=(h, w), mode="bilinear", align_corners=True)
            if s < num_stages - 1:
                s1s.append(_cbr(sd, f"{p}.skip1", xs[u]))
                s2s.append(_cbr(sd, f"{p}.skip2", out))
                if u == 3:
                    cross = _cbr(sd, f"{p}.cross_conv", out)
        skip1, skip2, x = s1s[::-1], s2s[::-1], cross
    return res
