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
from pathlib import Path

from tools.build import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from mpyrun import compiled_tests, firmware_build, run_micropython  # noqa: E402
from test_under_micropython import DUAL, heap_for  # noqa: E402

MARGIN_KIB = 4
LOWEST_KIB = 16


def passes(module: Path, build: Path, kib: int) -> bool:
    proc = run_micropython([str(ROOT / "tests" / "mpy_runner.py"), "-p", str(build), str(module)],
                           heap=f"{kib}k", timeout=300)
    last = [ln for ln in proc.stdout.splitlines() if ln.endswith(" failed")]
    return proc.returncode == 0 and bool(last) and last[-1].split()[2] == "0"


def smallest_heap(module: Path, build: Path, given: int) -> int | None:
    """The smallest heap in KiB (LOWEST_KIB..given) the module passes at, or
    None if it fails at the heap it is given."""
    if not passes(module, build, given):
        return None
    lo, hi = LOWEST_KIB - 1, given  # fails at lo (or below the range), passes at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(module, build, mid):
            hi = mid
        else:
            lo = mid
    return hi


def main(argv: list[str]) -> int:
    build = firmware_build()
    print(f"{'dual test module':<42} {'given':>6} {'smallest':>9} {'margin':>7}  "
          f"{'target':<8} verdict")
    failed = 0
    for rel in DUAL:
        module = ROOT / rel
        if module.parent.name == "firmware":  # run compiled, as make test does
            module = compiled_tests(module.parent) / module.name
        given = int(heap_for(rel).rstrip("k"))
        low = smallest_heap(module, build, given)
        margin = None if low is None else given - low
        ok = margin is not None and margin >= MARGIN_KIB
        failed += not ok
        shown = "fails" if low is None else f"{'<=' if low == LOWEST_KIB else ''}{low}k"
        print(f"{rel:<42} {given:>5}k {shown:>9} {margin if margin is not None else '-':>6}k  "
              f">= {MARGIN_KIB}k    {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
