"""setup.py's build decisions (toolkit discovery, archs, sources) and running without the extension."""

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rsn_fast import _ext

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_mod():
    spec = importlib.util.spec_from_file_location("rsn_fast_setup", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # setup() itself only runs as __main__
    return mod


def fake_toolkit(root: Path, layout: str = "lib64") -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    lib = root / "lib64" if layout == "lib64" else root / "targets" / "x86_64-linux" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so").write_text("")
    return root


@pytest.fixture
def clean_env(monkeypatch, setup_mod, tmp_path):
    for var in ("CUDA_HOME", "CUDA_PATH", "TORCH_CUDA_ARCH_LIST", "RSN_FAST_SKIP_CUDA_BUILD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(setup_mod, "standard_locations", lambda: [tmp_path / "no-such-cuda"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


@pytest.mark.parametrize("layout", ["lib64", "targets"])
def test_cuda_home_env_is_used(setup_mod, clean_env, tmp_path, monkeypatch, layout):
    home = fake_toolkit(tmp_path / "cuda", layout)
    monkeypatch.setenv("CUDA_HOME", str(home))
    assert setup_mod.find_cuda_home()[0] == home


def test_bad_cuda_home_fails_early_with_message(setup_mod, clean_env, tmp_path, monkeypatch):
    (tmp_path / "half" / "bin").mkdir(parents=True)
    (tmp_path / "half" / "bin" / "nvcc").write_text("")  # nvcc but no libcudart: the late -lcudart failure
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "half"))
    with pytest.raises(SystemExit, match="is not a CUDA toolkit"):
        setup_mod.find_cuda_home()


def test_nvcc_wrapper_without_toolkit_fails_early(setup_mod, clean_env, tmp_path, monkeypatch):
    bindir = tmp_path / "wrapper-bin"
    bindir.mkdir()
    (bindir / "nvcc").write_text('#!/bin/sh\nexec /somewhere/else/nvcc "$@"\n')
    (bindir / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(SystemExit, match="nvcc is on PATH .* but no CUDA toolkit was found"):
        setup_mod.find_cuda_home()


def test_standard_location_beats_wrapper_on_path(setup_mod, clean_env, tmp_path, monkeypatch):
    home = fake_toolkit(tmp_path / "cuda-std")
    monkeypatch.setattr(setup_mod, "standard_locations", lambda: [home])
    bindir = tmp_path / "wrapper-bin"
    bindir.mkdir()
    (bindir / "nvcc").write_text("#!/bin/sh\n")
    (bindir / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    assert setup_mod.find_cuda_home()[0] == home


def test_no_toolkit_anywhere_skips_cuda(setup_mod, clean_env):
    home, why = setup_mod.find_cuda_home()
    assert home is None and "no CUDA toolkit" in why


def _fake_torch(gpu_caps=()):
    cuda = types.SimpleNamespace(
        is_available=lambda: bool(gpu_caps),
        device_count=lambda: len(gpu_caps),
        get_device_capability=lambda i: gpu_caps[i],
    )
    return types.SimpleNamespace(cuda=cuda)


def test_default_archs(setup_mod, clean_env, monkeypatch):
    assert setup_mod.choose_archs(_fake_torch(), (13, 0)) == "7.5;8.0;9.0"
    assert setup_mod.choose_archs(_fake_torch(), (12, 8)) == "7.0;8.0;9.0"  # nvcc 12 still has Volta
    assert setup_mod.choose_archs(_fake_torch([(7, 0), (8, 0), (7, 0)]), (12, 8)) == "7.0;8.0"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    assert setup_mod.choose_archs(_fake_torch([(9, 0)]), (13, 0)) == "8.6"


def test_skip_cuda_build_env(setup_mod, clean_env, monkeypatch, capsys):
    monkeypatch.setenv("RSN_FAST_SKIP_CUDA_BUILD", "1")
    torch_like = types.SimpleNamespace(version=types.SimpleNamespace(cuda="13.0"), __version__="x")
    assert setup_mod.cuda_plan(torch_like) == (None, None)
    assert "RSN_FAST_SKIP_CUDA_BUILD" in capsys.readouterr().err


def test_cpu_torch_skips_cuda_with_reason(setup_mod, clean_env, capsys):
    torch_like = types.SimpleNamespace(version=types.SimpleNamespace(cuda=None), __version__="2.x+cpu")
    assert setup_mod.cuda_plan(torch_like) == (None, None)
    assert "not a CUDA build" in capsys.readouterr().err


def test_sources_cover_csrc_but_not_cpp_tests(setup_mod):
    cpp, cu = setup_mod.sources()
    assert "csrc/bindings.cpp" in cpp and "csrc/bn_add_relu/bn_add_relu.cpp" in cpp
    assert "csrc/bn_add_relu/bn_add_relu_cuda.cu" in cu
    assert not any(p.startswith("csrc/tests/") for p in cpp)


def test_cu_files_include_no_torch_headers():
    """Kernels stay torch-free: nvcc then compiles a .cu in seconds instead of minutes."""
    for cu in (ROOT / "csrc").rglob("*.cu"):
        text = cu.read_text()
        for banned in ("<torch/", "<ATen/", "<c10/"):
            assert banned not in text, f"{cu.relative_to(ROOT)} includes a torch header ({banned})"


@pytest.mark.skipif(not _ext.extension_available(), reason="rsn_fast._C not built")
def test_extension_reports_its_build():
    mod = _ext.require_extension()
    assert isinstance(mod.with_cuda(), bool)
    archs = _ext.extension_cuda_archs()
    if mod.with_cuda() and not _ext.extension_is_emulation():  # an emulation build compiles for no GPU arch
        assert archs and all(a.replace(".", "").replace("+PTX", "").isdigit() for a in archs), archs
    else:
        assert archs == []


def test_package_works_without_extension():
    """With rsn_fast._C unimportable, the package and its ops still work, and asking for it explains the fix."""
    code = """
import sys
sys.modules["rsn_fast._C"] = None  # makes `from rsn_fast import _C` raise ImportError
import torch, rsn_fast, rsn_fast.ops
from rsn_fast.ops import bn_add_relu
from rsn_fast.ops._dispatch import REGISTRY, BackendError
x = torch.randn(1, 3, 4, 4)
y = bn_add_relu(x, torch.ones(3), torch.zeros(3), relu=True)
assert torch.equal(y, torch.relu(x))
assert REGISTRY["bn_add_relu"][0].choose(x, torch.ones(3), torch.zeros(3)).name == "reference"
try:
    bn_add_relu(x, torch.ones(3), torch.zeros(3), backend="cpp")
except BackendError as e:
    assert "pip install --no-build-isolation" in str(e), str(e)
else:
    raise AssertionError("backend='cpp' ran without the extension")
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RSN_FAST_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
