"""A supplier's signed reading (docs/MARKET.md, shared/stream.py): the
signing half of the reading format, a module of its own so a supplier board
signs its readings with only this code loaded (shared/stream.py, which
also decodes and checks readings, re-exports it for every other caller).

A reading is a COSE_Sign1 by the supplier (kid = supplier id) whose payload
is the canonical CBOR map {1: agreement id, 2: index, 3: value, 4: scale}.
"""
from shared import cbor, cose


def reading(private_key, supplier, agreement, index, value, scale):
    """Signed reading bytes."""
    return cose.sign1(private_key, cbor.dumps(
        {1: agreement, 2: index, 3: value, 4: scale}), supplier)
