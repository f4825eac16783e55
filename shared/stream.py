"""Off-chain service data (docs/MARKET.md): the signed readings a supplier
streams on tl/<domain>/data/<supplier hex>/<agreement hex> and the Merkle commitment of a
batch of them.

A reading is a COSE_Sign1 by the supplier (kid = supplier id) whose payload
is the canonical CBOR map {1: agreement id, 2: index, 3: value, 4: scale}.
A batch commitment is the RFC 6962 root over the batch's readings, each
leaf being the whole COSE bytes of one reading.

The batch's root is computed as the readings are produced, by
shared/streamroot.py (a module of its own: a buyer board never loads it).
A reading is signed by shared/streamsign.py (`reading`, re-exported here),
a module of its own too: a supplier board signs with only that code loaded.
The map keys are literals here: each module-level name costs a board heap.
"""
from shared import cbor, cose
from shared.streamsign import reading  # noqa: F401 (the format's signing half)


def open_reading(message, public_key):
    """Verify a reading under the supplier's key and decode it:
    (agreement, index, value, scale). Raises a TLError (bad-cose,
    bad-signature, bad-cbor, bad-tx) otherwise."""
    s1 = cose.parse1(message)
    cose.check1(public_key, s1)
    return fields(s1.payload)


def fields(payload):
    """(agreement, index, value, scale) of a reading's payload, its signature
    already checked (open_reading; a buyer board checks it with
    shared/cose.py before it loads this module). Raises a TLError (bad-cbor,
    bad-tx) otherwise."""
    from shared import errors

    m = cbor.loads(payload)
    if not isinstance(m, dict) or len(m) != 4:
        raise errors.TxError("bad-reading")
    a, i, v, sc = m.get(1), m.get(2), m.get(3), m.get(4)
    if not isinstance(a, bytes) or len(a) != 16:
        raise errors.TxError("bad-reading")
    for x in (i, v, sc):
        if not isinstance(x, int) or isinstance(x, bool):
            raise errors.TxError("bad-reading")
    if i < 0 or not -20 <= sc <= 20:
        raise errors.TxError("bad-reading")
    return a, i, v, sc
