"""Fixtures for the market tests (the ledger helpers of tests/gateway/gwtest.py
are reused)."""

import sys
from pathlib import Path

for _p in (Path(__file__).resolve().parent.parent / "gateway",):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
