"""Spies on the gateway's internals that tests count calls of."""

from __future__ import annotations

import pytest

from gateway.db import store


def count_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the receipts trees the store rebuilds from tx rows (a one-item
    list, read after the code under test ran)."""
    calls = [0]
    real = store.receipts_levels

    def spy(leaves):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(leaves)

    monkeypatch.setattr(store, "receipts_levels", spy)
    return calls
