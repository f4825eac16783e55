"""Gateway -> device replies on tl/<domain>/dev/<id>/rx (canonical CBOR maps).

A receipt carries the block height, the signed header and the RFC 6962 audit
path of the receipt leaf in the block's receipts tree, so a light node checks
its receipt against the header without the block. A rejection carries a wire
reason code from shared/errors.py and a finer detail.
"""
from shared import cbor, errors, header, merkle

KIND_RECEIPT = 1
KIND_REJECT = 2

M_KIND = 0
M_TX = 1
M_SEQ = 2
M_STATUS = 3
M_REASON = 4
M_EVENTS = 5
M_HEIGHT = 6
M_HEADER = 7
M_INDEX = 8
M_SIZE = 9
M_PROOF = 10
M_DETAIL = 11

STATUS_OK = 0
STATUS_FAILED = 1


def receipt_leaf(tx_id, status, reason, events):
    """The bytes hashed into the receipts tree for one transaction."""
    return cbor.dumps({1: tx_id, 2: status, 3: reason, 4: events})


def receipt(tx_id, seq, status, reason, events, height, signed_header, index, size, proof):
    return cbor.dumps({
        M_KIND: KIND_RECEIPT, M_TX: tx_id, M_SEQ: seq, M_STATUS: status, M_REASON: reason,
        M_EVENTS: events, M_HEIGHT: height, M_HEADER: signed_header, M_INDEX: index,
        M_SIZE: size, M_PROOF: proof,
    })


def rejection(tx_id, seq, reason, detail):
    return cbor.dumps({M_KIND: KIND_REJECT, M_TX: tx_id, M_SEQ: seq, M_REASON: reason,
                       M_DETAIL: detail})


def parse(data):
    """Decode a reply; returns the map (raises DecodeError / ProofError)."""
    m = cbor.loads(data)
    if not isinstance(m, dict) or m.get(M_KIND) not in (KIND_RECEIPT, KIND_REJECT):
        raise errors.ProofError("bad-reply")
    if not isinstance(m.get(M_TX), bytes) or not isinstance(m.get(M_REASON), str):
        raise errors.ProofError("bad-reply")
    return m


def check_receipt(m, authority_public_key):
    """Verify a parsed receipt: the header is signed by the authority and the
    receipt leaf is in its receipts_root at the stated height. Returns the
    header fields; raises ProofError / SignatureError otherwise."""
    if m.get(M_KIND) != KIND_RECEIPT:
        raise errors.ProofError("not-receipt")
    fields, _ = header.open_signed(authority_public_key, m.get(M_HEADER))
    if fields["height"] != m.get(M_HEIGHT):
        raise errors.ProofError("height-mismatch")
    leaf = receipt_leaf(m[M_TX], m.get(M_STATUS), m[M_REASON], m.get(M_EVENTS))
    if not merkle.verify(leaf, m.get(M_INDEX), m.get(M_SIZE), m.get(M_PROOF),
                         fields["receipts_root"]):
        raise errors.ProofError("bad-proof")
    return fields
