"""Backend selection shared by every fused op (house style: STYLE.md, "Ops").

Order: the explicit ``backend=`` argument, then ``RSN_FAST_BACKEND``, then automatic: cuda → triton → reference,
the first whose ``not_supported_reasons`` is empty. An explicit backend that cannot run raises
:class:`BackendError` with its reasons; when nothing fits, the error lists every backend's reasons.
Decisions use static metadata only (device, dtype, shape, layout), so torch.compile can trace them.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rsn_fast import _ext
from rsn_fast.ops._export import exporting

# Load the extension (or record why it is missing) now, outside any torch.compile trace: backend choice reads
# only the cached facts, which dynamo can trace.
_ext.load_extension()

AUTO_ORDER = ("cuda", "triton", "reference")
BACKENDS = ("cuda", "triton", "cpp", "reference")


class BackendError(RuntimeError):
    """A requested backend cannot run these inputs, or no backend can."""


# computed once at import: a cached function (functools.cache) makes dynamo warn when it traces the dispatch
_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether triton is installed (looked up once, when this module is imported)."""
    return _TRITON_AVAILABLE


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cuda_reasons(tensors: Sequence[torch.Tensor], op_name: str | None = None) -> list[str]:
    """Why the CUDA (csrc) backend cannot run on ``tensors``; empty when it can.

    On a CUDA emulation build (csrc/emulation) the kernels run on CPU tensors; :class:`Dispatcher` never picks
    the emulated backend automatically (it is slow), only on an explicit request.
    """
    reasons = []
    if _ext.extension_is_emulation():
        if not all(t.device.type == "cpu" for t in tensors):
            reasons.append("rsn_fast._C is a CUDA emulation build: its cuda backend takes CPU tensors only")
    elif not all(t.is_cuda for t in tensors):
        reasons.append("inputs are not CUDA tensors")
    if not _ext.extension_available():
        reasons.append(f"rsn_fast._C is not built ({_ext.load_extension()[1]}); {_ext.BUILD_HINT}")
    elif not _ext.extension_has_cuda():
        reasons.append(
            "rsn_fast._C was built without CUDA (at build time: RSN_FAST_SKIP_CUDA_BUILD, a CPU build of torch, "
            "or no CUDA toolkit; setup.py printed which)"
        )
    elif op_name is not None and not hasattr(torch.ops.rsn_fast, op_name):
        reasons.append(f"rsn_fast._C has no op {op_name}")
    return reasons


def cuda_op(name: str):
    """``torch.ops.rsn_fast.<name>``'s CUDA kernel: ``<name>_emulated_cuda`` on an emulation build, whose CPU
    dispatch key ``<name>`` itself gives to the C++ CPU kernel (ops with a ``cpp`` and a ``cuda`` backend)."""
    if _ext.extension_is_emulation():
        return getattr(torch.ops.rsn_fast, name + "_emulated_cuda")
    return getattr(torch.ops.rsn_fast, name)


def cpp_reasons(tensors: Sequence[torch.Tensor], op_name: str | None = None) -> list[str]:
    """Why the C++ CPU kernel cannot run on ``tensors``; empty when it can."""
    reasons = []
    if not all(t.device.type == "cpu" for t in tensors):
        reasons.append("inputs are not CPU tensors")
    if not _ext.extension_available():
        reasons.append(f"rsn_fast._C is not built ({_ext.load_extension()[1]}); {_ext.BUILD_HINT}")
    elif op_name is not None and not hasattr(torch.ops.rsn_fast, op_name):
        reasons.append(f"rsn_fast._C has no op {op_name}")
    return reasons


def triton_reasons(tensors: Sequence[torch.Tensor]) -> list[str]:
    """Why Triton cannot run on ``tensors``: it needs compute capability ≥ 8.0, or TRITON_INTERPRET=1 on CPU."""
    if not triton_available():
        return ["triton is not installed"]
    if triton_interpret():
        if any(t.is_cuda for t in tensors):
            return ["TRITON_INTERPRET=1 runs on CPU tensors only"]
        return []
    if not all(t.is_cuda for t in tensors):
        return ["inputs are not CUDA tensors (set TRITON_INTERPRET=1 to run Triton on the CPU)"]
    major, minor = torch.cuda.get_device_capability(tensors[0].device)
    if major < 8:
        return [f"compute capability {major}.{minor} < 8.0 (Triton 3.3+ has no Volta/Turing support)"]
    return []


@dataclass
class Backend:
    """One implementation of an op: ``fn`` runs it, ``reasons(*args, **kwargs)`` says why it cannot."""

    name: str
    fn: Callable
    reasons: Callable[..., list[str]]


class Dispatcher:
    """Chooses a backend for one op. ``auto_order`` lists the backends tried automatically."""

    def __init__(self, op: str, backends: Sequence[Backend], auto_order: Sequence[str] = AUTO_ORDER):
        self.op = op
        self.backends = {b.name: b for b in backends}
        self.auto_order = [n for n in auto_order if n in self.backends]
        self._warned = False

    def all_reasons(self, *args, **kwargs) -> dict[str, list[str]]:
        return {name: list(b.reasons(*args, **kwargs)) for name, b in self.backends.items()}

    def choose(self, *args, backend: str | None = None, **kwargs) -> Backend:
        if "reference" in self.backends and exporting():
            # an exported graph must consist of standard operators (see rsn_fast.ops._export)
            return self.backends["reference"]
        requested = backend or os.environ.get("RSN_FAST_BACKEND") or None
        if requested is not None:
            if requested not in self.backends:
                raise BackendError(
                    f"{self.op}: unknown backend '{requested}'; choose one of {sorted(self.backends)}"
                )
            b = self.backends[requested]
            why = b.reasons(*args, **kwargs)
            if why:
                raise BackendError(
                    f"{self.op}: backend '{requested}' cannot run these inputs: " + "; ".join(why)
                )
            return b
        report = {}
        for name in self.auto_order:
            b = self.backends[name]
            if name == "cuda" and _ext.extension_is_emulation():
                report[name] = ["the CUDA emulation build runs only when asked for (backend='cuda')"]
                continue
            why = b.reasons(*args, **kwargs)
            if not why:
                if name == "reference" and not self._warned:
                    tensors = [a for a in args if isinstance(a, torch.Tensor)]
                    if any(t.is_cuda for t in tensors):
                        self._warned = True
                        warnings.warn(
                            f"{self.op}: CUDA tensors fall back to the reference implementation ("
                            + "; ".join(f"{k}: {', '.join(v)}" for k, v in report.items())
                            + ")",
                            stacklevel=3,
                        )
                return b
            report[name] = why
        raise BackendError(
            f"{self.op}: no backend can run these inputs: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in report.items())
        )

    def __call__(self, *args, backend: str | None = None, **kwargs):
        return self.choose(*args, backend=backend, **kwargs).fn(*args, **kwargs)


# Every op module registers its dispatcher here so `python -m rsn_fast.info` can report on it.
REGISTRY: dict[str, tuple[Dispatcher, Callable[[torch.device], tuple]]] = {}


def register(dispatcher: Dispatcher, example_inputs: Callable[[torch.device], tuple]) -> Dispatcher:
    """Record ``dispatcher`` with a function making small example inputs on a device (for ``rsn_fast.info``)."""
    REGISTRY[dispatcher.op] = (dispatcher, example_inputs)
    return dispatcher
