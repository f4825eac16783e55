"""Building gateway -> device replies (the gateway's side of
shared/messages.py, also reachable as messages.receipt, messages.STATUS_OK, ...).
Host clients read them with shared/replies_host.py."""
from shared import cbor
from shared.messages import (
    KIND_ACCOUNT,
    KIND_ENDED,
    KIND_MATCH,
    KIND_RECEIPT,
    KIND_REJECT,
    M_CERT,
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
# rejections only, set for a retryable reason (shared/reasons.py RETRYABLE):
# send the same signed message again after at least this many ms
M_RETRY = 12
# market notices (docs/MARKET.md)
M_AGREEMENT = 20
M_BUYER = 21
M_SUPPLIER = 22
M_SUPPLIER_KEY = 23
M_SERVICE = 24
M_PRICE = 25
M_QUANTITY = 26
M_INTERVAL = 27
M_EXPIRY = 28
M_CONTRACT = 29
M_ROLE = 30
M_BALANCE = 31
M_REFUND = 32
M_ORDER = 33  # MATCH: its order among the notices sealed at its height (replays are not newer)
M_NEXT = 34  # MATCH told again after a restart: the first reading index not committed
M_LEFT = 35  # MATCH: seconds from its sealing to the agreement's expiry

STATUS_OK = 0
STATUS_FAILED = 1


def receipt(tx_id, seq, status, reason, events, height, signed_header, index, size, proof,
            cert=None):
    """Format 1: `signed_header` is the authority's COSE_Sign1 of the header.
    Format 2 (`cert` given): `signed_header` is the header's bytes and `cert`
    its commit certificate (the list of shared/commit.py)."""
    m = {
        M_KIND: KIND_RECEIPT, M_TX: tx_id, M_SEQ: seq, M_STATUS: status, M_REASON: reason,
        M_EVENTS: events, M_HEIGHT: height, M_HEADER: signed_header, M_INDEX: index,
        M_SIZE: size, M_PROOF: proof,
    }
    if cert is not None:
        m[M_CERT] = cert
    return cbor.dumps(m)


def rejection(tx_id, seq, reason, detail, retry_ms=None):
    """The rejection map (sealed by the authority before it goes to a
    device's rx topic: shared/notice.py seal). `retry_ms` (a retryable
    reason) says the refusal is not final: the same message may be sent
    again after that many ms."""
    m = {M_KIND: KIND_REJECT, M_TX: tx_id, M_SEQ: seq, M_REASON: reason, M_DETAIL: detail}
    if retry_ms is not None:
        m[M_RETRY] = retry_ms
    return cbor.dumps(m)


def match(agreement, buyer, supplier, supplier_key, service, price, quantity, interval, expiry,
          contract, role, height, order, left, next_index=None):
    """A MATCH sealed at head `height`, `order`-th of that height (a board acts
    only on one newer than the newest it acted on), `left` seconds before the
    agreement's expiry; next_index: told again after a restart (docs/MARKET.md)."""
    m = {
        M_KIND: KIND_MATCH, M_AGREEMENT: agreement, M_BUYER: buyer, M_SUPPLIER: supplier,
        M_SUPPLIER_KEY: supplier_key, M_SERVICE: service, M_PRICE: price,
        M_QUANTITY: quantity, M_INTERVAL: interval, M_EXPIRY: expiry, M_CONTRACT: contract,
        M_ROLE: role, M_HEIGHT: height, M_ORDER: order, M_LEFT: left,
    }
    if next_index is not None:
        m[M_NEXT] = next_index
    return cbor.dumps(m)


def account(balance, height):
    return cbor.dumps({M_KIND: KIND_ACCOUNT, M_BALANCE: balance, M_HEIGHT: height})


def ended(agreement, refund, height):
    return cbor.dumps({M_KIND: KIND_ENDED, M_AGREEMENT: agreement, M_REFUND: refund,
                       M_HEIGHT: height})
