"""Loading MMPose 0.x / 1.x and official-code (caiyuanhao1998/RSN) checkpoints into our models.

MMPose files: ``{'state_dict': sd, 'meta': ...}`` (or a bare state dict) with keys ``backbone.*`` and ``head.*``
(1.x) or ``keypoint_head.*`` (0.x), maybe ``data_preprocessor.mean/std`` (dropped) and a ``module.`` prefix.

Official files: ``{'model': sd}`` with OFF module names and conv biases. They are converted with the key map of
RSN_SPEC 14.4, and every conv bias is folded into its BatchNorm (``running_mean -= bias``), which leaves the
eval-mode output unchanged and does not matter in training mode (BN subtracts the batch mean).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "read_state_dict",
    "convert_official_state_dict",
    "state_dict_problems",
]


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model (missing, unexpected or mis-shaped keys)."""


def _torch_load(path: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - MMPose 1.x files pickle mmengine objects in their 'meta'.
        if "weights_only" not in str(e) and "Unpickl" not in type(e).__name__:
            raise
    warnings.warn(
        f"{path}: the file holds Python objects besides tensors; loading it with weights_only=False "
        "(only do this for files you trust)",
        stacklevel=3,
    )
    return torch.load(path, map_location="cpu", weights_only=False)


def _strip_module(sd: dict) -> OrderedDict:
    if sd and all(k.startswith("module.") for k in sd):
        return OrderedDict((k[len("module.") :], v) for k, v in sd.items())
    return OrderedDict(sd)


def _is_official(sd: dict) -> bool:
    return any(k.startswith(("top.conv.", "stage0.")) for k in sd)


_OFF_HEAD = re.compile(r"^stage(\d+)\.upsample\.up([1-4])\.res_conv([12])\.")
_OFF_STAGE = re.compile(r"^stage(\d+)\.")
_OFF_RENAMES = ((".conv_bn_relu3.", ".conv_bn3."), (".u_skip.", ".in_skip."), (".skip1.", ".out_skip1."))
_OFF_RENAMES += ((".skip2.", ".out_skip2."),)


def _official_key(key: str) -> str:
    if key.startswith("top.conv."):
        return "backbone.top.top.0." + key[len("top.conv.") :]
    m = _OFF_HEAD.match(key)
    if m:
        s, u, c = (int(g) for g in m.groups())
        return f"head.predict_layers.{4 * s + u - 1}.conv_layers.{c - 1}." + key[m.end() :]
    m = _OFF_STAGE.match(key)
    if m:
        key = f"backbone.multi_stage_rsn.{m.group(1)}." + key[m.end() :]
        for a, b in _OFF_RENAMES:
            key = key.replace(a, b)
        return key
    # The official PRM is never wired into the official network; if a file carries it (top level or under
    # ``prm.``), it is the module our ``official`` variant places at ``head.prm``.
    if key.startswith("conv_bn_relu_prm_"):
        return "head.prm." + key
    if key.startswith("prm.conv_bn_relu_prm_"):
        return "head." + key
    raise CheckpointError(f"official checkpoint key {key!r} has no counterpart in the MMPose layout")


def convert_official_state_dict(sd: dict, bgr_to_rgb: bool = False) -> OrderedDict:
    """Official-code state dict -> our (MMPose 1.x) names, with conv biases folded into BN running means.

    Args:
        sd: the official state dict (``module.`` prefix allowed).
        bgr_to_rgb: flip the stem conv's input channels, so that weights trained on BGR input take RGB input.
    """
    sd = _strip_module(sd)
    sd = OrderedDict((k, v.clone() if torch.is_tensor(v) else v) for k, v in sd.items())
    for key in [k for k in sd if k.endswith(".conv.bias")]:
        prefix = key[: -len(".conv.bias")]
        mean_key = prefix + ".bn.running_mean"
        if mean_key not in sd:
            raise CheckpointError(
                f"official checkpoint: conv bias {key!r} has no BatchNorm {mean_key!r} to fold into"
            )
        sd[mean_key] = sd[mean_key] - sd.pop(key).to(sd[mean_key].dtype)
    out = OrderedDict((_official_key(k), v) for k, v in sd.items())
    if bgr_to_rgb:
        stem = "backbone.top.top.0.conv.weight"
        out[stem] = out[stem].flip(1).contiguous()
    return out


def read_state_dict(path: str | os.PathLike) -> OrderedDict:
    """Read a checkpoint file of any supported format and return a state dict in our (MMPose 1.x) names."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and all(torch.is_tensor(v) for v in obj.values()):
        sd = obj
    else:
        keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: no state dict found (expected 'state_dict' or 'model'; got {keys})")
    sd = _strip_module(sd)
    if _is_official(sd):
        return convert_official_state_dict(sd)
    out = OrderedDict()
    for k, v in sd.items():
        if k.startswith("data_preprocessor."):
            continue  # MMPose 1.x stores the normalisation mean/std here; our data pipeline owns them.
        if k.startswith("keypoint_head."):
            k = "head." + k[len("keypoint_head.") :]
        out[k] = v
    return out


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def state_dict_problems(own: dict, sd: dict, strict: bool = True, limit: int = 20) -> list[str]:
    """Why ``sd`` does not fit a model whose state dict is ``own``: short lines (empty when it fits).

    Missing and unexpected keys count only with ``strict``; shape mismatches always. Key lists are cut after ``limit``.
    """
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and torch.is_tensor(sd[k]) and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing, limit)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected, limit)}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches: {_listing(wrong, limit)}")
    return problems


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load an MMPose 0.x/1.x or official-code checkpoint into ``model`` (in place) and return it.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: with ``strict``, any missing or unexpected key (listed); always, any shape mismatch.
    """
    sd = read_state_dict(path)
    own = model.state_dict()
    problems = state_dict_problems(own, sd, strict)
    if problems:
        raise CheckpointError(f"{os.fspath(path)} does not fit the model:\n  " + "\n  ".join(problems))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=strict)
    return model
