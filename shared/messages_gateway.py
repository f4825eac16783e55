"""Building gateway -> device replies (the gateway's side of
shared/messages.py, also reachable as messages.receipt, messages.STATUS_OK, ...)."""
from shared import cbor
from shared.messages import (
    KIND_RECEIPT,
    KIND_REJECT,
    M_EVENTS,
    M_HEADER,
    M_HEIGHT,
    M_INDEX,
    M_KIND,
    M_PROOF,
    M_REASON,
    M_SEQ,
    M_SIZE,
    M_STATUS,
    M_TX,
)

M_DETAIL = 11

STATUS_OK = 0
STATUS_FAILED = 1


def receipt(tx_id, seq, status, reason, events, height, signed_header, index, size, proof):
    return cbor.dumps({
        M_KIND: KIND_RECEIPT, M_TX: tx_id, M_SEQ: seq, M_STATUS: status, M_REASON: reason,
        M_EVENTS: events, M_HEIGHT: height, M_HEADER: signed_header, M_INDEX: index,
        M_SIZE: size, M_PROOF: proof,
    })


def rejection(tx_id, seq, reason, detail):
    return cbor.dumps({M_KIND: KIND_REJECT, M_TX: tx_id, M_SEQ: seq, M_REASON: reason,
                       M_DETAIL: detail})
