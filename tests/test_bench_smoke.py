"""Smoke tests of the whole-step benchmark, the traffic model and the plots on CPU at tiny sizes: they run and
report what they claim (the GPU numbers come from benchmarks/device_suite.sh)."""

from __future__ import annotations

import csv

import pytest


def test_bench_train_step_runs_on_cpu(capsys):
    from benchmarks import bench_train_step

    argv = ["--device", "cpu", "--size", "32", "32", "--providers", "eager,fused_reference", "--no-csv"]
    assert bench_train_step.main(argv) == 0
    out = capsys.readouterr().out
    for line in ("| train_step | rsn18 | eager |", "| train_step | rsn18 | fused_reference |",
                 "| eval_forward | rsn18 | fused_reference |"):  # fmt: skip
        assert line in out


def test_traffic_model_counts_the_step(tmp_path, capsys):
    from benchmarks import traffic

    out_csv = tmp_path / "traffic.csv"
    assert traffic.main(["--models", "RSN-18", "--batch", "2", "--size", "64", "64", "--top", "3",
                         "--csv", str(out_csv)]) == 0  # fmt: skip
    assert "TRAFFIC MODEL" in capsys.readouterr().out
    rows = {r["mode"]: r for r in csv.DictReader(out_csv.open())}
    eager, fused = rows["eager"], rows["fused"]
    # the same math: the same FLOPs and a comparable byte count, the fused step in its own kernels
    assert float(eager["GFLOP"]) == pytest.approx(float(fused["GFLOP"]))
    assert 0.3 < float(eager["read_GB"]) / float(fused["read_GB"]) < 3
    # batch 2, 64x64: RSN-18's step is ~2 x 3 x 2 x 0.17 GMAC per image at that size
    assert 0.5 < float(eager["GFLOP"]) < 10
    for gpu, bw, _ in traffic.GPUS:
        gb = float(eager["read_GB"]) + float(eager["written_GB"])
        assert float(eager[f"{gpu}_mem_ms"]) == pytest.approx(gb * 1e9 / bw * 1e3)


def test_plot_draws_every_results_csv(tmp_path):
    from benchmarks import plot

    d = tmp_path / "cpu"
    d.mkdir()
    (d / "decode.csv").write_text(
        "op,provider,mode,shape,dtype,ms,GB/s\nd,eager,fwd,N1,fp32,2.0,1\nd,cuda,fwd,N1,fp32,1.0,2\n"
    )
    (d / "bench_rsb.csv").write_text(
        "case,batch,provider,mode,median_ms,persons_per_s,speedup\nr,32,eager_cl,eval-fwd,10,3.2,1.0\n"
    )
    made = plot.main(["--results", str(tmp_path)])
    assert made == 0
    assert (d / "decode.png").stat().st_size > 1000 and (d / "bench_rsb.png").stat().st_size > 1000


def test_bench_demo_threads_runs_fixed_and_tuned(capsys):
    """The demo-speed benchmark runs a fixed count and the tuner (``auto``) in child processes and reports the
    iterations spent at each thread count."""
    from benchmarks import bench_demo_threads

    argv = ["--iters", "3", "--max-seconds", "30", "--threads", "1", "auto", "--policy", "default",
            "--opt", "model.input_size=[32,32]", "data.batch_size=2"]  # fmt: skip
    bench_demo_threads.main(argv)
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |") or "auto" in line
    ]
    assert len(rows) == 2, rows
    fixed, auto = rows
    assert fixed.split("|")[3].strip() == "3" and fixed.rstrip(" |").endswith("1: 3"), fixed
    assert auto.split("|")[3].strip() == "3", auto  # 3 iterations: still the tuner's first trial of all cores
