"""Draw every CSV under benchmarks/results/ as a PNG beside it: ``python -m benchmarks.plot [--results DIR]``.

One horizontal grouped bar chart per CSV, one group per case (op / case / model, mode, shape, dtype, batch) and
one bar per provider, from the newest row of each (case, provider):

* rows with a time and an ``eager``-like baseline provider (eager, eager_nchw, loop, reference: the first one
  present): the speed-up over it (``x baseline``, higher is faster);
* otherwise a throughput (items/s, persons_per_s, a ``result`` like "164.0 img/s"), or the time in ms;
* the traffic model (benchmarks/results/model/traffic.csv): modelled memory-bound and FLOP-bound ms per GPU;
* train_step.csv also gets peak memory (MB) when the rows have it (GPU runs).
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ("eager", "eager_nchw", "loop", "reference")
CASE_COLUMNS = ("op", "bench", "case", "model", "mode", "shape", "dtype", "batch")
TIME_COLUMNS = ("ms", "median_ms")
RATE_COLUMNS = ("items/s", "persons_per_s")


def _num(text: str | None) -> float | None:
    m = re.match(r"\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", text or "")
    return float(m.group(1)) if m else None


def _latest(rows: list[dict]) -> dict[tuple[str, str], dict]:
    cols = [c for c in CASE_COLUMNS if c in rows[0]]
    out = {}
    for r in rows:  # later rows replace earlier ones: the newest measurement of each case and provider
        case = " ".join(str(r[c]) for c in cols if r.get(c))
        series = (
            r.get("provider")
            or re.sub(r"(^|\s)[-+]?\d[\d.]*\s.*$", "", r.get("result", "")).strip()
            or "value"
        )
        out[(case, series)] = r
    return out


def series_of(rows: list[dict]) -> tuple[str, dict[str, dict[str, float]]]:
    """(x-axis label, {case: {series: value}}) for one CSV's rows."""
    if rows and "model" in rows[0] and any(c.endswith("_mem_ms") for c in rows[0]):  # the traffic model
        data = {}
        for r in rows:
            case = f"{r['model']} {r['mode']}"
            data[case] = {c.replace("_", " "): float(r[c]) for c in r if c.endswith(("_mem_ms", "_flop_ms"))}
        return "modelled ms per step (memory-bound / FLOP-bound; a model, not a measurement)", data
    latest = _latest(rows)
    tcol = next((c for c in TIME_COLUMNS if c in rows[0]), None)
    rcol = next((c for c in RATE_COLUMNS if c in rows[0]), None)
    cases: dict[str, dict[str, dict]] = {}
    for (case, prov), r in latest.items():
        cases.setdefault(case, {})[prov] = r
    data: dict[str, dict[str, float]] = {}
    label = ""
    for case, provs in cases.items():
        base = next((b for b in BASELINES if b in provs), None)
        if tcol and base and _num(provs[base][tcol]):
            t0 = _num(provs[base][tcol])
            data[case] = {p: t0 / _num(r[tcol]) for p, r in provs.items() if _num(r[tcol])}
            label = "speed-up over the baseline provider (x, higher is faster)"
        elif rcol:
            data[case] = {p: _num(r[rcol]) for p, r in provs.items() if _num(r[rcol]) is not None}
            label = label or rcol
        elif "result" in rows[0]:  # "164.0 img/s", "batched 1.68 ms": one series per unit
            for p, r in provs.items():
                m = re.search(r"([-+]?\d+(?:\.\d*)?)\s*(img/s|ms|s)\b", r["result"])
                if m:
                    name = m.group(2) if p == "value" else f"{p} ({m.group(2)})"
                    data.setdefault(case, {})[name] = float(m.group(1))
            label = label or "result (the unit is the series)"
        elif tcol:
            data[case] = {p: _num(r[tcol]) for p, r in provs.items() if _num(r[tcol])}
            label = label or "ms"
    return label, data


def draw(csv_path: Path) -> Path | None:
    """The chart of one CSV, saved as <name>.png beside it; None when the CSV has nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    label, data = series_of(rows)
    data = {c: v for c, v in data.items() if v}
    if not data:
        return None
    mem = None
    if "peak MB" in rows[0] and any(_num(r.get("peak MB")) for r in rows):
        mem = {case: {p: _num(r["peak MB"]) for (c, p), r in _latest(rows).items() if c == case and _num(r["peak MB"])}
               for case in data}  # fmt: skip
    series = sorted({s for v in data.values() for s in v}, key=lambda s: (s not in BASELINES, s))
    ncols = 2 if mem else 1
    height = max(2.5, 0.32 * len(data) * max(1, len(series)) + 1.2)
    fig, axes = plt.subplots(1, ncols, figsize=(8 * ncols, min(height, 40)), squeeze=False)
    for ax, (values, xlabel) in zip(axes[0], [(data, label), (mem, "peak memory (MB)")][:ncols]):
        cases = list(values)
        bar = 0.8 / len(series)
        for i, s in enumerate(series):
            ys = [j + i * bar for j in range(len(cases))]
            xs = [values[c].get(s, 0.0) for c in cases]
            ax.barh(ys, xs, height=bar, label=s)
            for y, x in zip(ys, xs):
                if x:
                    ax.text(x, y, f" {x:.3g}", va="center", fontsize=7)
        ax.set_yticks([j + 0.4 - bar / 2 for j in range(len(cases))])
        ax.set_yticklabels(cases, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        if "speed-up" in xlabel:
            ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{csv_path.parent.name}/{csv_path.name}", fontsize=9)
    fig.tight_layout()
    out = csv_path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(RESULTS), help="folder searched for *.csv (recursively)")
    args = p.parse_args(argv)
    paths = sorted(Path(args.results).rglob("*.csv"))
    if not paths:
        print(f"no CSV under {args.results}")
        return 1
    for path in paths:
        out = draw(path)
        print(f"{path} -> {out}" if out else f"{path}: nothing to draw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
