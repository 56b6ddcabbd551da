"""Assertions on the Triton launches a call made (see rsn_fast.ops._launch): at least two tiles and a partial
last tile along every tiled dimension, so a dropped tile offset or a swapped tile index cannot pass."""

from __future__ import annotations

from collections.abc import Iterable

from rsn_fast.ops._launch import Launch


def assert_multi_tile(launches: list[Launch], kernels: Iterable[str]) -> None:
    """Every launch of each kernel in ``kernels`` (all of which must have run) spans >= 2 tiles with a partial
    last one along each tiled dimension."""
    ran = {launch.kernel for launch in launches}
    missing = set(kernels) - ran
    assert not missing, f"expected launches of {sorted(missing)}; recorded {sorted(ran)}"
    problems = [p for launch in launches if launch.kernel in set(kernels) for p in launch.problems()]
    assert not problems, "one-tile launches cannot catch tile-offset bugs:\n" + "\n".join(problems)


def max_rel_error(out, exact) -> float:
    """Largest per-element error of ``out`` relative to the largest magnitude of ``exact`` (float64)."""
    e = exact.double()
    return ((out.double() - e).abs().max() / e.abs().max().clamp_min(1e-30)).item()
