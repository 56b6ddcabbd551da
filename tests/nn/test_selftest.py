"""rsn_fast.selftest: the CLI's table and exit status (a planted wrong kernel gives 1), the model self-check's
error / fallback modes and its once-per-device hook. Under TRITON_INTERPRET=1 the Triton backend is checked too."""

from __future__ import annotations

import json

import pytest
import torch

from rsn_fast import selftest
from rsn_fast.config import load_config
from rsn_fast.models import build_model
from rsn_fast.nn import FusedRSB
from tests import tolerances
from tests.conftest import TRITON_INTERPRET


def test_pass_rule_constants_match_the_tests():
    assert selftest.LOWP_FACTOR == getattr(tolerances, "LOWP_FACTOR", selftest.LOWP_FACTOR)
    for dtype, atol in getattr(tolerances, "LOWP_ATOL", {}).items():
        assert selftest.LOWP_ATOL[dtype] == atol, dtype


def test_cli_table_and_json(capsys):
    assert selftest.main(["--device", "cpu", "--ops", "decode", "bn_add_relu"]) == 0
    out = capsys.readouterr().out
    assert "decode" in out and "bn_add_relu" in out and "passed" in out
    assert selftest.main(["--device", "cpu", "--ops", "rsb", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    backends = {r["backend"] for r in rows}
    assert {"reference"} <= backends and all(r["passed"] for r in rows)
    assert ("triton" in backends) == TRITON_INTERPRET
    assert all(r["op"] == "rsb" and r["max_err"] <= r["bound"] for r in rows)


def test_cli_unknown_op_is_a_usage_error(capsys):
    assert selftest.main(["--device", "cpu", "--ops", "rsbb"]) == 2
    assert "unknown op" in capsys.readouterr().err


def _plant_wrong_epilogue(monkeypatch):
    """The reference RSB epilogue off by 0.1% (in forward): what a subtly wrong kernel would do."""
    from rsn_fast.ops.rsb import reference

    right = reference.epilogue_forward
    monkeypatch.setattr(reference, "epilogue_forward", lambda *a: right(*a) * 1.001)


def test_cli_exit_1_on_a_wrong_kernel(monkeypatch, capsys):
    _plant_wrong_epilogue(monkeypatch)
    assert selftest.main(["--device", "cpu", "--ops", "rsb"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_exit_1_on_a_wrong_compiled_decoder(monkeypatch, capsys):
    from rsn_fast.ops._dispatch import REGISTRY

    backend = REGISTRY["decode_heatmaps"][0].backends["cpp"]
    if backend.reasons(*REGISTRY["decode_heatmaps"][1](torch.device("cpu"))):
        pytest.skip("the C++ decoder is not built")
    right = backend.fn
    monkeypatch.setattr(backend, "fn", lambda *a, **k: (right(*a, **k)[0] + 0.01, right(*a, **k)[1]))
    assert selftest.main(["--device", "cpu", "--ops", "decode"]) == 1


@pytest.fixture(scope="module")
def fused_model():
    # narrow branches (expand_times 4: widths 4/8/16/32) keep the CPU reference math cheap
    cfg = load_config(
        "configs/demo_synthetic.yaml",
        ["model.input_size=[32,32]", "model.fused=reference", "model.expand_times=4"],
    )
    return cfg, build_model(cfg, device="cpu")


def test_check_model_passes_and_covers_each_width(fused_model):
    _, model = fused_model
    results = selftest.check_model(model, "cpu", torch.float32)
    widths = sorted({m.width for m in model.modules() if isinstance(m, FusedRSB)})
    assert [r.op for r in results] == ["rsb"] * len(widths) + ["decode"]
    assert all(r.passed for r in results), [r.message() for r in results if not r.passed]
    assert all(f"b{w} " in r.shape for w, r in zip(widths, results))


def test_check_model_error_names_op_backend_device_dtype(fused_model, monkeypatch):
    _, model = fused_model
    _plant_wrong_epilogue(monkeypatch)
    with pytest.raises(selftest.SelfCheckError, match=r"rsb \(backend reference, device cpu, dtype float32"):
        selftest.check_model(model, "cpu", torch.float32, mode="error")


def test_check_model_fallback_switches_to_the_plain_math(monkeypatch):
    cfg = load_config("configs/demo_synthetic.yaml", ["model.input_size=[32,32]", "model.fused=reference"])
    model = build_model(cfg, device="cpu")
    _plant_wrong_epilogue(monkeypatch)
    with pytest.warns(UserWarning, match="falls back to the reference"):
        results = selftest.check_model(model, "cpu", torch.float32, mode="fallback")
    assert not all(r.passed for r in results)
    assert {m.backend for m in model.modules() if isinstance(m, FusedRSB)} == {"plain"}
    assert all(r.passed for r in selftest.check_model(model, "cpu", torch.float32, mode="error"))


def test_self_check_hook_runs_once_per_model_and_device_and_only_where_asked(fused_model):
    cfg, model = fused_model
    logs = []
    assert selftest.self_check(model, cfg, "cpu", log=logs.append) is None  # GPUs only by default
    assert selftest.self_check(model, cfg, "cpu", log=logs.append, device_types=("cpu",))
    assert selftest.self_check(model, cfg, "cpu", log=logs.append, device_types=("cpu",)) is None  # cached
    assert len(logs) == 1 and "checks passed in" in logs[0]
    plain = build_model(load_config("configs/demo_synthetic.yaml", ["model.fused=off"]))
    assert selftest.self_check(plain, cfg, "cpu", device_types=("cpu",)) is None


def test_check_covers_the_folded_eval_path(monkeypatch, fused_model):
    """Eval runs BN folded into the conv (another code path than training): a folding bias 1% off, which
    training never uses, fails the RSB check, named as the eval output."""
    from rsn_fast.nn import rsb as rsb_mod

    _, model = fused_model
    block = next(m for m in model.modules() if isinstance(m, FusedRSB))
    assert selftest.check_rsb_module(block, "reference", "cpu", torch.float32).passed
    right = rsb_mod.fold_bn
    monkeypatch.setattr(rsb_mod, "fold_bn", lambda *a: (right(*a)[0], right(*a)[1] * 1.01))
    r = selftest.check_rsb_module(block, "reference", "cpu", torch.float32)
    assert not r.passed and r.worst == "eval out", r
