"""``build_model``: a config (root, model section or YAML path) to an :class:`RSNPoseModel`, plain or fused.

This is the one place that decides whether the model runs on the plain modules or on the fused ops
(``model.fused``, see :class:`rsn_fast.config.ModelConfig`):

* ``off``: the plain modules (conv, BN, ReLU, one op each) everywhere.
* ``auto`` (default): on a CUDA device the fused RSB (:class:`rsn_fast.nn.FusedRSB`), the fused PRM spatial gate
  and the depthwise op, with backend :func:`auto_backend`; on any other device (or when no device is given)
  the plain modules.
* ``reference`` | ``triton`` | ``cuda``: the fused modules forced to that backend; when ``device`` is given, a
  backend that cannot run there raises at build time with each op's reasons, otherwise the first forward does.

The fused model has the plain model's parameters, buffers, state-dict keys and parameter order (MMPose's), so
checkpoints and optimizer states move between the two. In eval mode the fused RSBs fold BN into the convs.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from rsn_fast.config import Config, ModelConfig, load_config
from rsn_fast.models.rsn import RSNPoseModel

__all__ = [
    "build_model",
    "model_config_of",
    "resolve_fused_backend",
    "auto_backend",
    "fuse_model",
    "fused_backend_of",
    "AMPERE_BACKEND",
    "FUSED_OPS",
]

# The backend ``model.fused=auto`` uses on compute capability >= 8.0 (Volta/Turing always get "cuda": Triton 3.3+
# does not support them). No GPU has measured triton against cuda for the whole step yet
# (benchmarks/bench_train_step.py does, in the device suite). "cuda" is the choice until then: its RSB convs are
# cuDNN's (our kernels do only the prologue/statistics/epilogue passes), it compiles nothing at run time, and it
# is the path V100 runs anyway, so one backend serves every GPU. Change this one constant when a measurement
# says triton is faster.
AMPERE_BACKEND = "cuda"

# The ops a fused model calls (the RSB conv and epilogue, the PRM spatial gate, the depthwise conv)
FUSED_OPS = ("rsb_conv_bnact_stats", "rsb_epilogue", "prm_spatial_gate", "depthwise_conv2d")


def model_config_of(config: Config | ModelConfig | str | os.PathLike) -> ModelConfig:
    """The ``model:`` section of a root config, a model config, or a YAML file."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Config):
        return config.model
    if isinstance(config, (str, os.PathLike)):
        return load_config(config).model
    raise TypeError(
        f"build_model expects a Config, a ModelConfig or a YAML path, got {type(config).__name__}"
    )


def backend_reasons(backend: str, device: torch.device) -> dict[str, list[str]]:
    """Why each fused op cannot run ``backend`` on ``device`` (the ops' own dispatchers, on their example
    inputs); ops that can run are left out."""
    import rsn_fast.ops  # noqa: F401  (registers every op's dispatcher)
    from rsn_fast.ops._dispatch import REGISTRY

    out = {}
    for op in FUSED_OPS:
        dispatcher, example = REGISTRY[op]
        if backend not in dispatcher.backends:
            out[op] = [f"the op has no backend {backend!r} (it has {sorted(dispatcher.backends)})"]
            continue
        why = dispatcher.backends[backend].reasons(*example(device))
        if why:
            out[op] = list(why)
    return out


def auto_backend(device: torch.device) -> str | None:
    """The backend ``model.fused=auto`` gives the fused modules on ``device``; None means the plain modules.

    CPU (and anything that is not CUDA): None. CUDA with compute capability < 8.0: "cuda". Ampere and newer:
    :data:`AMPERE_BACKEND`. When that backend cannot run there (an extension built without CUDA), the other
    GPU backend if it can, else "reference" with a warning.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    first = AMPERE_BACKEND if major >= 8 else "cuda"
    candidates = [first] + [b for b in ("cuda", "triton") if b != first and major >= 8]
    report = {}
    for backend in candidates:
        why = backend_reasons(backend, device)
        if not why:
            return backend
        report[backend] = why
    warnings.warn(
        f"model.fused=auto: no fused GPU backend can run on {device}, using the reference ops: {report}",
        stacklevel=2,
    )
    return "reference"


def resolve_fused_backend(mode: str, device: torch.device | str | None = None) -> str | None:
    """The backend of the fused modules for ``model.fused=mode`` on ``device``, or None for the plain model.

    Raises:
        ValueError: an unknown mode, or an explicit backend that cannot run on ``device`` (naming each op
            and its reasons).
    """
    if mode == "off":
        return None
    if mode == "auto":
        return None if device is None else auto_backend(torch.device(device))
    if mode not in ("reference", "triton", "cuda"):
        raise ValueError(f"model.fused must be auto, off, reference, triton or cuda, got {mode!r}")
    if device is not None:
        why = backend_reasons(mode, torch.device(device))
        if why:
            raise ValueError(
                f"model.fused={mode} cannot run on {device}: "
                + "; ".join(f"{op}: {', '.join(r)}" for op, r in why.items())
            )
    return mode


def _depthwise_convs(model: nn.Module):
    """(parent, name, conv) for every plain depthwise conv the fused depthwise op can run."""
    from rsn_fast.nn.depthwise import DepthwiseConv2d

    for parent in model.modules():
        for name, conv in parent.named_children():
            if type(conv) is not nn.Conv2d or isinstance(conv, DepthwiseConv2d):
                continue
            k = conv.kernel_size[0]
            if (
                conv.groups == conv.in_channels == conv.out_channels
                and conv.kernel_size == (k, k)
                and k % 2 == 1
                and 3 <= k <= 31
                and conv.stride == (1, 1)
                and conv.dilation == (1, 1)
                and conv.padding_mode == "zeros"
                and conv.padding == (k // 2, k // 2)
            ):
                yield parent, name, conv


def fuse_model(model: nn.Module, backend: str) -> nn.Module:
    """Switch ``model`` (in place) to the fused ops with ``backend``: RSBs → FusedRSB, the PRM spatial gate's
    backend, depthwise convs → DepthwiseConv2d. Parameters are adopted, never copied: names, order and
    optimizer references stay. Returns ``model``."""
    from rsn_fast.nn.depthwise import DepthwiseConv2d
    from rsn_fast.nn.prm import PoseRefineMachine
    from rsn_fast.nn.rsb import convert

    model = convert(model, backend=backend)
    for m in model.modules():
        if isinstance(m, PoseRefineMachine):
            m.backend = backend
    for parent, name, conv in list(_depthwise_convs(model)):
        dw = DepthwiseConv2d(
            conv.in_channels, conv.kernel_size[0], conv.padding[0], bias=conv.bias is not None,
            backend=backend, device="meta",
        )  # fmt: skip
        dw.weight = conv.weight
        dw.bias = conv.bias
        dw.train(conv.training)
        setattr(parent, name, dw)
    model.fused_backend = backend
    return model


def fused_backend_of(model: nn.Module) -> str | None:
    """The backend :func:`build_model` fused ``model`` with, or None for a plain model."""
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "fused_backend", None)


def build_model(
    config: Config | ModelConfig | str | os.PathLike, device: torch.device | str | None = None
) -> RSNPoseModel:
    """Build the network described by ``config`` (validated first), with MMPose's initialisation.

    Args:
        config: a root config, its ``model`` section or a YAML path.
        device: where the model will run. ``model.fused=auto`` fuses only for a CUDA device, so pass it; the
            model is built on the CPU either way (move it with ``.to(device)``).

    Returns a module with submodules ``backbone`` and ``head`` whose state-dict keys are MMPose 1.x's, and
    attributes ``num_stages``, ``num_keypoints`` and ``fused_backend`` (None for the plain modules).
    """
    cfg = model_config_of(config)
    cfg.validate()
    model = RSNPoseModel(cfg)
    model.fused_backend = None
    backend = resolve_fused_backend(cfg.fused, device)
    if backend is not None:
        fuse_model(model, backend)
    return model
