"""python -m rsn_fast.info."""

import json
import os
import subprocess
import sys
from pathlib import Path

from rsn_fast import info

ROOT = Path(__file__).resolve().parents[1]


def test_collect_reports_versions_extension_and_backends():
    data = info.collect()
    assert data["versions"]["torch"] and data["versions"]["python"]
    assert set(data["extension"]) >= {"built"}
    assert not data["import_errors"], data["import_errors"]
    bn = data["ops"]["bn_add_relu"]["cpu"]
    expected = "cpp" if data["extension"]["built"] else "reference"
    assert bn["chosen"] == expected
    # why cuda was passed over on the CPU (an emulation build's cuda runs CPU tensors, only when asked for)
    why = "only when asked for" if data["extension"].get("cuda_emulation") else "not CUDA tensors"
    assert why in " ".join(bn["reasons"]["cuda"])


def test_cli_json_and_text():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "rsn_fast.info", "--json"], capture_output=True, text=True, env=env, check=True
    )
    data = json.loads(out.stdout)
    assert "bn_add_relu" in data["ops"]
    text = info.format_report(data)
    assert "Compiled extension rsn_fast._C" in text and "bn_add_relu [cpu]" in text
    # export mode: what export does with the custom ops, and what this install can check
    assert "runs its pure-torch reference" in text and "grouped Conv" in text
    assert data["export"]["formats"] == ["onnx", "torchscript", "exported-program"]
    want = "onnxruntime" if data["versions"]["onnxruntime"] else None
    assert data["export"]["onnx_parity_check"] == want
