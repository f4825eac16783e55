"""Heap margin of the dual test modules under MicroPython (`python -m bench.dual_heap`).

`make test` runs every dual test module (tests/shared, tests/firmware) under
the MicroPython Unix port with a fixed heap (tests/test_under_micropython.py:
64 KiB, a market board's heap for the market's modules). A module that only
just fits passes here and fails on another machine, where a longer checkout
path or another address layout leaves a few hundred bytes less (one did: a
MemoryError in CI at 64 KiB, with 3 KiB to spare here). This measures, for
each module, the smallest heap (in KiB) it passes at, by bisection, and the
margin left under the heap it gets in `make test`. Bisection assumes a
module that passes at a heap passes at every larger one; fragmentation makes
that only nearly true, so "smallest" is within a KiB or so. A module that
passes at LOWEST_KIB shows "<=16k".
Target: a margin of at least MARGIN_KIB per module."""

from __future__ import annotations

import sys

from tests.support.mpyrun import dual_module_run
from tests.test_under_micropython import DUAL, heap_for

MARGIN_KIB = 4
LOWEST_KIB = 16


def passes(rel: str, kib: int) -> bool:
    return dual_module_run(rel, f"{kib}k")[0]


def smallest_heap(rel: str, given: int) -> int | None:
    """The smallest heap in KiB (LOWEST_KIB..given) the module passes at, or
    None if it fails at the heap it is given."""
    if not passes(rel, given):
        return None
    lo, hi = LOWEST_KIB - 1, given  # fails at lo (or below the range), passes at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(rel, mid):
            hi = mid
        else:
            lo = mid
    return hi


def main(argv: list[str]) -> int:
    print(f"{'dual test module':<42} {'given':>6} {'smallest':>9} {'margin':>7}  "
          f"{'target':<8} verdict")
    failed = 0
    for rel in DUAL:
        given = int(heap_for(rel).rstrip("k"))
        low = smallest_heap(rel, given)  # run as make test runs it (tests/support/mpyrun.py)
        margin = None if low is None else given - low
        ok = margin is not None and margin >= MARGIN_KIB
        failed += not ok
        shown = "fails" if low is None else f"{'<=' if low == LOWEST_KIB else ''}{low}k"
        print(f"{rel:<42} {given:>5}k {shown:>9} {margin if margin is not None else '-':>6}k  "
              f">= {MARGIN_KIB}k    {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
