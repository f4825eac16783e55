"""Every dual test module (tests/shared, tests/firmware) also runs under
`micropython -X heapsize=64k`, through tests/mpy_runner.py."""

import pytest
from mpyrun import ROOT, run_dual_module

DUAL = sorted(
    str(p.relative_to(ROOT))
    for d in ("tests/shared", "tests/firmware")
    for p in (ROOT / d).glob("test_*.py")
)


@pytest.mark.micropython
@pytest.mark.parametrize("module", DUAL)
def test_module_under_micropython(module):
    run_dual_module(module)


REFUSALS = [m for m in DUAL if m.endswith("_reject.py")]


@pytest.mark.micropython
@pytest.mark.parametrize("module", REFUSALS)
def test_refusals_hold_with_asserts_stripped(module):
    """`micropython -O` strips `assert`, as a board build can: every refusal
    must still raise its typed error (expect_error raises explicitly)."""
    run_dual_module(module, optimize=True)
