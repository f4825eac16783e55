"""Gateway -> device replies on tl/<domain>/dev/<id>/rx (canonical CBOR maps).

A receipt carries the block height, the header and the RFC 6962 audit path
of the receipt leaf in the block's receipts tree, so a light node checks its
receipt against the header without the block. Two formats (docs/PROTOCOL.md):
- format 1 (chains without a consensus section in genesis): M_HEADER is the
  header as a COSE_Sign1 by the domain authority, no M_CERT;
- format 2: M_HEADER is the header's CBOR bytes (version 2, naming its
  validator set) and M_CERT its commit certificate (shared/commit.py): k
  votes of the set on the header's hash. A rejection carries a wire
reason code from shared/errors.py and a finer detail.

Frugality (see shared/__init__.py): a light node loads this module to read and
check replies; building them (receipt, rejection, STATUS_OK/FAILED, M_DETAIL)
is the gateway's work, in shared/messages_gateway.py, still reachable here
(messages.receipt, ...) and loaded on first use.
"""
from shared import cbor, commit, errors, header, lazy, merkle

KIND_RECEIPT = 1
KIND_REJECT = 2
# market notices (docs/MARKET.md); their keys are in shared/messages_gateway.py
KIND_MATCH = 3
KIND_ACCOUNT = 4
KIND_ENDED = 5

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
M_CERT = 13  # format 2: the commit certificate of M_HEADER
# M_DETAIL = 11 (rejections only): shared/messages_gateway.py


def receipt_leaf(tx_id, status, reason, events):
    """The bytes hashed into the receipts tree for one transaction."""
    return cbor.dumps({1: tx_id, 2: status, 3: reason, 4: events})


def parse(data, copy=True):
    """Decode a reply (a receipt, a rejection or a market notice); returns
    the map (raises DecodeError / ProofError).
    copy=False (a board): its byte strings are memoryview slices of `data`
    (no copy of the signed header; check_receipt takes either)."""
    m = cbor.loads(data, copy=copy)
    if not isinstance(m, dict) or not isinstance(m.get(M_KIND), int):
        raise errors.ProofError("bad-reply")
    if m[M_KIND] > KIND_REJECT:
        if m[M_KIND] > KIND_ENDED:
            raise errors.ProofError("bad-reply")
        return m  # a market notice: its reader checks the fields it uses
    if not isinstance(m.get(M_TX), (bytes, memoryview)) or not isinstance(m.get(M_REASON), str):
        raise errors.ProofError("bad-reply")
    return m


def check_receipt(m, authority_public_key, validators=None):
    """Verify a parsed receipt: its header is final (format 2: a certificate
    of the validator set; format 1: signed by the authority) and the receipt
    leaf is in its receipts_root at the stated height. `validators`:
    (threshold, sorted pubkeys, their commit.valset_hash or None); None: the
    authority alone, k = 1. Returns the header fields; raises ProofError /
    SignatureError otherwise."""
    if m.get(M_KIND) != KIND_RECEIPT:
        raise errors.ProofError("not-receipt")
    cert = m.get(M_CERT)
    if cert is None:
        fields, _ = header.open_signed(authority_public_key, m.get(M_HEADER))
    else:
        fields = commit.final_header(m.get(M_HEADER), cert, validators or (
            1, [authority_public_key], None))
    if fields["height"] != m.get(M_HEIGHT):
        raise errors.ProofError("height-mismatch")
    leaf = receipt_leaf(m[M_TX], m.get(M_STATUS), m[M_REASON], m.get(M_EVENTS))
    if not merkle.verify(leaf, m.get(M_INDEX), m.get(M_SIZE), m.get(M_PROOF),
                         fields["receipts_root"]):
        raise errors.ProofError("bad-proof")
    return fields


__getattr__ = lazy("shared.messages_gateway", globals())
