"""tools.export: ONNX (dynamo and TorchScript exporters), TorchScript and ExportedProgram files of RSN models
with every rsn_fast op, checked against PyTorch (onnxruntime, relative error <= 1e-4, batch sizes 1 and 3)."""

import os

import pytest
import torch

from rsn_fast.config import load_config
from rsn_fast.models import build_model
from rsn_fast.nn import DepthwiseConv2d, convert
from rsn_fast.tools.export import check_export, export_model, main

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
SIZE = (64, 64)  # (W, H): small, to keep CI cheap; the models are fully convolutional


def _model(name, seed=0, overrides=()):
    torch.manual_seed(seed)
    m = build_model(load_config(os.path.join(CONFIGS, name), list(overrides))).eval()
    # Non-default BN statistics, so that a dropped or wrongly folded BN changes the output. Kept near the
    # defaults: wider ones make activations grow through the depth (to ~1e5 with var in [0.5, 1.5]), where
    # fp32 PyTorch itself is ~1e-4 away from fp64 and a 1e-4 parity bound would test rounding, not export.
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.05)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 0.2 + 0.9)
    return m


def _with_depthwise_module(model):
    """The PRM's depthwise 9x9 as rsn_fast.nn.DepthwiseConv2d (the op that failed to export), same weights."""
    n = 0
    for mod in model.modules():
        conv = getattr(mod, "conv", None)
        if isinstance(conv, torch.nn.Conv2d) and conv.groups == conv.in_channels > 1:
            dw = DepthwiseConv2d(conv.in_channels, conv.kernel_size[0], bias=conv.bias is not None)
            dw.load_state_dict(conv.state_dict())
            mod.conv = dw
            n += 1
    assert n >= 1
    # the module must really run (the paper PRM's fused gate reads the depthwise weight without calling it)
    calls = []
    hooks = [
        d.register_forward_hook(lambda *a: calls.append(1))
        for d in model.modules()
        if isinstance(d, DepthwiseConv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, SIZE[1], SIZE[0]))
    for h in hooks:
        h.remove()
    assert len(calls) == n
    return model


# OFF's PRM (the official variant) runs its depthwise 9x9 as a module: with DepthwiseConv2d swapped in, the
# exported graph has to translate the rsn_fast depthwise op
PRM_DW = ("rsn18_coco_256x192_prm.yaml", ["model.prm_variant=official"])


def _onnx_ops(path):
    g = onnx.load(path).graph
    return g, {(n.domain or "ai.onnx", n.op_type) for n in g.node}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_rsn18_prm_with_depthwise_module_exports_as_grouped_conv(tmp_path, exporter):
    m = _with_depthwise_module(_model(PRM_DW[0], 1, PRM_DW[1]))
    out = str(tmp_path / f"dw_{exporter}.onnx")
    export_model(m, out, "onnx", SIZE, dynamic_batch=True, exporter=exporter)
    assert max(check_export(m, out, "onnx", SIZE, (1, 3)).values()) <= 1e-4
    g, ops = _onnx_ops(out)
    assert all(d == "ai.onnx" for d, _ in ops), ops
    groups = [a.i for n in g.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert 17 in groups  # OFF's PRM: depthwise 9x9 over the K = 17 heatmap channels


def test_4xrsn50_onnx(tmp_path):
    m = _model("4xrsn50_coco_256x192.yaml", seed=2)
    out = str(tmp_path / "4xrsn50.onnx")
    export_model(m, out, "onnx", (32, 32), dynamic_batch=True, exporter="torchscript")
    assert max(check_export(m, out, "onnx", (32, 32), (1, 3)).values()) <= 1e-4


@pytest.mark.parametrize("fmt, fused", [("torchscript", True), ("exported-program", False)])
def test_torchscript_and_exported_program_hold_standard_ops(tmp_path, fmt, fused):
    name, over = ("demo_synthetic.yaml", []) if fused else PRM_DW
    m, ref = _model(name, 3, over), _model(name, 3, over)
    if fused:
        # FusedRSBs with an explicit backend take the fused-op path (rsb_conv_bnact_stats, rsb_epilogue) in eval
        convert(m, backend="reference")
    else:
        _with_depthwise_module(m)
    out = str(tmp_path / f"fused.{fmt}")
    export_model(m, out, fmt, SIZE, dynamic_batch=True)
    assert max(check_export(ref, out, fmt, SIZE, (1, 3)).values()) <= 1e-4
    if fmt == "exported-program":
        ep = torch.export.load(out)
        targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    else:
        targets = {n.kind() for n in torch.jit.load(out).inlined_graph.nodes()}
    assert not [t for t in targets if "rsn_fast" in t], targets


def test_raw_depthwise_op_translations(tmp_path):
    """A graph that calls torch.ops.rsn_fast.depthwise_conv2d itself: the registered translations."""

    class Raw(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(8, 1, 5, 5))
            self.b = torch.nn.Parameter(torch.randn(8))

        def forward(self, x):
            return torch.ops.rsn_fast.depthwise_conv2d(x, self.w, self.b, 2, "reference")

    m = Raw().eval()
    x = torch.randn(2, 8, 11, 9, generator=torch.Generator().manual_seed(4))
    ref = torch.nn.functional.conv2d(x, m.w, m.b, padding=2, groups=8)
    from rsn_fast.ops._export import onnx_translation_table, register_torchscript_symbolics

    register_torchscript_symbolics()
    for dynamo in (False, True):
        path = str(tmp_path / f"raw_{dynamo}.onnx")
        # a raw op call is recorded as it is: without the translations neither exporter knows it
        kw = {"custom_translation_table": onnx_translation_table()} if dynamo else {}
        torch.onnx.export(m, (x,), path, dynamo=dynamo, input_names=["x"], **kw)
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
        assert float((torch.from_numpy(got) - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_cli_writes_checked_file_and_names_bad_input(tmp_path, capsys):
    cfg = os.path.join(CONFIGS, "demo_synthetic.yaml")
    m = _model("demo_synthetic.yaml", seed=5)
    ckpt = str(tmp_path / "w.pth")
    torch.save({"state_dict": m.state_dict()}, ckpt)
    out = str(tmp_path / "m.onnx")
    rc = main(["--config", cfg, "--checkpoint", ckpt, "--format", "onnx", "--out", out, "--dynamic-batch",
               "--exporter", "torchscript"])  # fmt: skip
    assert rc == 0 and os.path.isfile(out)
    text = capsys.readouterr().out
    assert "batch 1" in text and "batch 3" in text
    before = open(out, "rb").read()
    two_stage = tmp_path / "2stage.yaml"
    two_stage.write_text("model: {num_stages: 2, input_size: [64, 96]}\n")
    rc = main(["--config", str(two_stage), "--checkpoint", ckpt, "--format", "onnx", "--out", out])
    assert rc != 0
    assert "w.pth" in capsys.readouterr().err
    assert open(out, "rb").read() == before  # the earlier file is untouched
    with pytest.raises(ValueError, match="multiples of 32"):
        export_model(m, str(tmp_path / "x.onnx"), "onnx", (50, 64))
