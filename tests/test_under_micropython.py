"""Every dual test module (tests/shared, tests/firmware) also runs under
`micropython -X heapsize=64k`, through tests/mpy_runner.py.

The market's modules (tests/firmware/test_market_*.py) run with MARKET_TEST_HEAP:
besides the market part (which a virtual market board runs with
tools/vboard.py's MARKET_HEAP) they import most of shared/ themselves to build
and check what they hand the market (bench/README.md, "Market boards"). They
pass from 59-67 KiB (bench.dual_heap), at least 4 KiB under it."""

import pytest

from tests.support.mpyrun import HEAP, ROOT, run_dual_module

MARKET_TEST_HEAP = "72k"

DUAL = sorted(
    str(p.relative_to(ROOT))
    for d in ("tests/shared", "tests/firmware")
    for p in (ROOT / d).glob("test_*.py")
)


def heap_for(module: str) -> str:
    """The heap a dual module runs with (bench/dual_heap.py measures the margin)."""
    return MARKET_TEST_HEAP if module.startswith("tests/firmware/test_market_") else HEAP


@pytest.mark.micropython
@pytest.mark.parametrize("module", DUAL)
def test_module_under_micropython(module):
    run_dual_module(module, heap=heap_for(module))


REFUSALS = [m for m in DUAL if m.endswith("_reject.py")]


@pytest.mark.micropython
@pytest.mark.parametrize("module", REFUSALS)
def test_refusals_hold_with_asserts_stripped(module):
    """`micropython -O` strips `assert`, as a board build can: every refusal
    must still raise its typed error (expect_error raises explicitly)."""
    run_dual_module(module, optimize=True)
