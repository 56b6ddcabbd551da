"""Compile every Triton kernel of the package for a GPU target, offline, on a CPU-only machine.

The interpreter (TRITON_INTERPRET=1) runs kernels as numpy code and never lowers them, so type errors, illegal
constexpr uses or layout problems that only the GPU compiler sees would first show up on a GPU. Here each kernel
goes through triton.compile (TTIR → TTGIR → LLVM → PTX → cubin with Triton's bundled ptxas) for sm_90.

To cover a new kernel, add a ``Case`` to CASES: the module, the kernel name, its constexpr values as the launcher
passes them on a GPU, and the element types of its pointer arguments (``*_ptr`` arguments default to float32,
other arguments to int32 scalars). ``test_every_kernel_has_a_case`` fails when a module in COVERED_MODULES gains a
``*_kernel`` without one.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

import pytest

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    # Under the interpreter @triton.jit gives interpreter functions, which cannot be compiled; the README's test
    # command runs this file in its first (compiled) pass.
    pytest.skip("TRITON_INTERPRET=1: kernels are interpreter functions here", allow_module_level=True)

# triton is a dependency (pyproject: 3.6 <= triton < 4) and ASTSource/GPUTarget exist since 3.2: an ImportError
# here is a broken install or an unsupported triton, and fails the run instead of skipping it.
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# A100 (sm_80, the oldest Triton target) and H100 (sm_90)
GPU_TARGETS = {"sm80": GPUTarget("cuda", 80, 32), "sm90": GPUTarget("cuda", 90, 32)}

DW = "rsn_fast.ops.depthwise_conv2d.triton"
PRM = "rsn_fast.ops.prm_gate.triton"
DECODE = "rsn_fast.ops.decode_heatmaps.triton"
TARGETS = "rsn_fast.ops.megvii_targets.triton"
RSB = "rsn_fast.ops.rsb.triton"
ELTWISE = "rsn_fast.ops.rsb.triton_eltwise"
# Modules whose every *_kernel must have a case.
COVERED_MODULES = (DW, PRM, DECODE, TARGETS, RSB, ELTWISE)
DTYPES = ("fp32", "fp16", "bf16")


@dataclass
class Case:
    module: str
    kernel: str
    constexprs: dict
    pointers: dict = field(default_factory=dict)  # argument name -> Triton pointer type, e.g. "*bf16"
    scalars: dict = field(default_factory=dict)  # argument name -> Triton scalar type when not i32
    tag: str = ""

    @property
    def id(self) -> str:
        return f"{self.module.split('.')[-2]}.{self.kernel}" + (f"[{self.tag}]" if self.tag else "")


def _act(dtype: str, *names: str) -> dict:
    return {n: f"*{dtype}" for n in names}


def _dw_cases() -> list[Case]:
    cases = []
    for dt in DTYPES:
        # (BLOCK_H, BLOCK_W, BLOCK_C) of the GPU tiles: NCHW row strips, NHWC channel blocks (_tile)
        for layout, (bh, bw, bc) in (("nchw", (8, 32, 1)), ("nhwc", (4, 8, 64))):
            for flip, stats, bias in ((False, True, False), (True, False, True)):
                cases.append(
                    Case(DW, "_dw_conv_kernel",
                         dict(K=9, HAS_BIAS=bias, FLIP=flip, STATS=stats, ROUND=False, ACC=tl.float32,
                              BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc),
                         _act(dt, "x_ptr", "w_ptr", "b_ptr", "y_ptr"), tag=f"{dt}-{layout}-flip{int(flip)}")
                )  # fmt: skip
            cases.append(
                Case(DW, "_dw_wgrad_kernel", dict(K=9, ACC=tl.float32, BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc),
                     _act(dt, "g_ptr", "x_ptr"), tag=f"{dt}-{layout}")
            )  # fmt: skip
    return cases


def _prm_cases() -> list[Case]:
    blocks = dict(BLOCK_P=64, BLOCK_C=32)  # _blocks on a GPU for C >= 32
    cases = []
    for dt in DTYPES:
        cases += [
            Case(PRM, "_gate_eval_kernel", dict(K=9, ROUND=False, **blocks),
                 _act(dt, "u_ptr", "o1_ptr", "o2_ptr", "out_ptr"), tag=dt),
            Case(PRM, "_pointwise_kernel", blocks, _act(dt, "z_ptr"), tag=dt),
            Case(PRM, "_gate_kernel", dict(ROUND=False, **blocks), _act(dt, "o1_ptr", "o2_ptr", "out_ptr"), tag=dt),
            Case(PRM, "_gate_bwd_kernel", dict(ROUND=False, **blocks),
                 _act(dt, "g_ptr", "o1_ptr", "o2_ptr", "do1_ptr"), tag=dt),
        ]  # fmt: skip
        for stage in (0, 1):
            cases.append(
                Case(PRM, "_bn_d_bwd_kernel", dict(STAGE=stage, ROUND=False, **blocks),
                     _act(dt, "z_ptr", "dz_ptr"), tag=f"{dt}-stage{stage}")
            )  # fmt: skip
    return cases


def _decode_cases() -> list[Case]:
    # 32 x 32 tiles (the launcher uses the heatmap's padded size): the same code paths, a quarter of the
    # compile time (64 x 64 took ~45 s for the four modes on 2 cores)
    ptrs = {"perm_ptr": "*i64"}
    return [
        Case(DECODE, "_decode_kernel",
             dict(MODE=mode, R=2, PAD=10 if mode == 0 else 2, HAS_FLIP=flip, ACC=tl.float32, BLOCK_H=32, BLOCK_W=32),
             ptrs, tag=f"mode{mode}-flip{int(flip)}")
        for mode, flip in ((0, True), (1, False), (2, False), (3, True))
    ]  # fmt: skip


def _targets_cases() -> list[Case]:
    ptrs = {"xi_ptr": "*i64", "yi_ptr": "*i64", "valid_ptr": "*i8"}
    return [Case(TARGETS, "_megvii_kernel", dict(CENTER=c, BLOCK_H=64, BLOCK_W=64), ptrs, tag=f"center{int(c)}")
            for c in (True, False)]  # fmt: skip


def _rsb_cases() -> list[Case]:
    cases = []
    for dt in DTYPES:
        # the GPU tiles of rsb.triton._blocks for C_out = 64, C_src = 26 (BLOCK_M 64, BLOCK_N 64, BLOCK_K 32). A 1x1
        # conv over two summed sources: the 3x3 variant unrolls nine taps and took 140 s per arch to compile on 2
        # loaded cores (the 1x1 one ~40 s), too slow for CI; the tap loop is the same code with KS=3.
        cases.append(
            Case(RSB, "_conv_bnact_stats_kernel",
                 dict(STRIDE=1, KS=1, PAD=0, NSRC=2, CAT=False, HAS_AFFINE=True, RELU=True, HAS_BIAS=False,
                      STATS=True, DOT_PRECISION="ieee" if dt == "fp32" else "tf32", UPCAST_DOT=False, ROUND=False,
                      BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
                 _act(dt, "x0_ptr", "x1_ptr", "x2_ptr", "x3_ptr", "w_ptr", "bias_ptr", "z_ptr"), tag=f"{dt}-1x1-sum")
        )  # fmt: skip
        eb = dict(CL=True, ROUND=False, BLOCK_P=64, BLOCK_C=64)  # _grid on a GPU for C >= 64
        src = dict(NSRC=2, CAT=False, HAS_AFFINE=True, RELU=True)
        cases += [
            Case(ELTWISE, "_epilogue_kernel", dict(HAS_RA=True, **eb), _act(dt, "z_ptr", "r_ptr", "out_ptr"), tag=dt),
            Case(ELTWISE, "_epilogue_bwd_kernel", dict(HAS_RA=True, **eb),
                 _act(dt, "g_ptr", "out_ptr", "z_ptr", "r_ptr", "dz_ptr", "dr_ptr"), tag=dt),
            Case(ELTWISE, "_grad_fold_kernel", dict(HAS_GZ=True, HAS_GS=True, HAS_GQ=True, **eb),
                 _act(dt, "gz_ptr", "z_ptr", "g_ptr"), tag=dt),
            Case(ELTWISE, "_prologue_kernel", dict(**src, **eb), _act(dt, "u_ptr", "x0", "x1", "x2", "x3"), tag=dt),
            Case(ELTWISE, "_prologue_bwd_kernel", dict(**src, **eb),
                 _act(dt, "du_ptr", "x0", "x1", "x2", "x3", "d0", "d1", "d2", "d3"), tag=dt),
        ]  # fmt: skip
    return cases


def _module(name: str):
    return importlib.import_module(name)  # an ImportError fails the test


CASES = _dw_cases() + _prm_cases() + _decode_cases() + _targets_cases() + _rsb_cases()


def _compile(case: Case, target):
    mod = _module(case.module)
    fn = getattr(mod, case.kernel)
    fn = getattr(fn, "fn", fn) if not isinstance(fn, triton.runtime.JITFunction) else fn  # autotuned wrappers
    signature, constexprs = {}, {}
    for i, p in enumerate(fn.params):
        if p.is_constexpr:
            assert p.name in case.constexprs, f"{case.id}: no value for constexpr {p.name}"
            signature[p.name] = "constexpr"
            constexprs[(i,)] = case.constexprs[p.name]
        elif p.name in case.pointers or p.name.endswith("_ptr"):
            signature[p.name] = case.pointers.get(p.name, "*fp32")
        else:
            signature[p.name] = case.scalars.get(p.name, "i32")
    unknown = set(case.constexprs) - {p.name for p in fn.params if p.is_constexpr}
    assert not unknown, f"{case.id}: {sorted(unknown)} are not constexpr parameters of {case.kernel}"
    return triton.compile(ASTSource(fn, signature, constexprs), target=target)


@pytest.mark.parametrize("arch", list(GPU_TARGETS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_compiles(case, arch):
    compiled = _compile(case, GPU_TARGETS[arch])
    assert compiled.asm.get("cubin"), f"{case.id}: no cubin"
    assert ".entry" in compiled.asm["ptx"]


def test_every_kernel_has_a_case():
    have = {(c.module, c.kernel) for c in CASES}
    missing = []
    for name in COVERED_MODULES:
        mod = _module(name)
        for attr, obj in vars(mod).items():
            fn = obj if isinstance(obj, triton.runtime.JITFunction) else getattr(obj, "fn", None)
            if (
                isinstance(fn, triton.runtime.JITFunction)
                and attr.endswith("_kernel")
                and fn.__module__ == name
            ):
                if (name, attr) not in have:
                    missing.append(f"{name}.{attr}")
    assert not missing, f"Triton kernels without a compile case in CASES: {missing}"
