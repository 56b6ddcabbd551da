"""A record of the Triton launches a call made, for tests.

Every Triton launcher calls :func:`record` with its kernel, its grid and, for each tiled dimension, the
extent it covers and the tile size it chose (including dimensions a program walks in an inner loop of
``BLOCK`` steps). Tests wrap a call in :func:`recording` and check that each launch had at least two tiles
and a partial last tile along every tiled dimension (a test that runs one tile cannot see a tile-offset
bug). Outside :func:`recording` nothing is kept: :func:`record` is one global read.

Inside :func:`recording` under ``TRITON_INTERPRET=1``, the launchers also take small tiles (:func:`small_tiles`),
so that small test shapes span several tiles; elsewhere they keep their usual tiles (the interpreter's cost
grows with the number of programs, so the rest of the test suite stays fast).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rsn_fast.ops._dispatch import triton_interpret


@dataclass(frozen=True)
class Launch:
    kernel: str
    grid: tuple[int, ...]
    tiles: dict[str, tuple[int, int]]  # dimension name -> (extent, tile size)

    def problems(self) -> list[str]:
        """Tiled dimensions with fewer than 2 tiles or no partial last tile (size-1 tiles: only >= 2)."""
        out = []
        for dim, (extent, tile) in self.tiles.items():
            count = -(-extent // tile)
            if count < 2:
                out.append(f"{self.kernel}: dimension {dim} has {count} tile(s) ({extent} / tile {tile})")
            elif tile > 1 and extent % tile == 0:
                out.append(
                    f"{self.kernel}: dimension {dim} has no partial last tile ({extent} / tile {tile})"
                )
        return out


_LOG: list[Launch] | None = None


def record(kernel, grid: tuple[int, ...], **tiles: tuple[int, int]) -> None:
    """Note one launch of ``kernel`` (a triton JITFunction or its name) while :func:`recording` is active."""
    if _LOG is not None:
        name = kernel if isinstance(kernel, str) else getattr(kernel, "__name__", repr(kernel))
        _LOG.append(
            Launch(name, tuple(int(g) for g in grid), {k: (int(e), int(t)) for k, (e, t) in tiles.items()})
        )


def small_tiles() -> bool:
    """Whether launchers should take their small test tiles: inside :func:`recording`, under the interpreter."""
    return _LOG is not None and triton_interpret()


@contextmanager
def recording() -> Iterator[list[Launch]]:
    """``with recording() as launches:`` collects every launch made inside the block (nesting restores)."""
    global _LOG
    prev, _LOG = _LOG, []
    try:
        yield _LOG
    finally:
        _LOG = prev
