"""Cross-domain consensus rules (docs/CROSSDOMAIN.md): the tx types 26-29
(schema, precheck, apply), registered by gateway/plugins.py with XPURCHASE
(30, gateway/xdomain/recorded.py).

CLIENT_CREATE (26) {1: domain, 2: k, 3: [pubkeys, sorted], 4: trusting period s,
    5: header bytes, 6: certificate}: by the domain owner (the genesis owner,
    else the authority: not-authorized). A new client, or a replacement of a
    frozen or expired one (the owner reinstates it); a live client: duplicate.
CLIENT_UPDATE (27) {1: domain, 2: [[header bytes, certificate, [k, [pubkeys]] or
    null], ...] (1..MAX_ENTRIES)}: by anyone (a relayer holds no rights).
    gateway/xdomain/client.py checks every header; a conflicting header
    freezes the client (the tx is included, event client-frozen).
SEND (28) {1: destination domain, 2: recipient id, 3: amount, 4: timeout height,
    5: timeout time, 6?: memo}: escrows `amount` from the sender in this
    domain's escrow account and commits the packet (shared/xpacket.py) under
    xp<destination> 00 <seq>. Needs a client of the destination (unknown-domain,
    client-frozen); packet over MAX_PACKET: too-large.
RELAY (29) {1: "recv" | "ack" | "timeout", 2: packet bytes, 3: proof height,
    4: state proof, 5: ack bytes (ack only)}: by anyone.
    A check that needs the block's time (an expired client, a live client on
    CLIENT_CREATE, a packet past its timeout on recv) fails the included tx
    with its reason (fee and seq taken, nothing else changed).
    recv, in the destination: the packet's proof against the source's trusted
    header at the proof height; the packet must name this domain
    (wrong-domain), be received once (duplicate) and not be past its timeout
    at this block (timed-out). Credits the recipient (minted: the value is
    held in the source's escrow), or acks failure (unknown recipient); the
    receipt (the ack) is kept for good under xr<source> 00 <seq>.
    ack, in the source: the receipt's proof against the destination's trusted
    header; closes the packet: the escrow is burnt (ok) or refunded (failed).
    timeout, in the source: a trusted destination header past the timeout and
    the proof that its state holds no receipt of the packet: refunds.
    A packet already closed: duplicate; never sent: unknown-packet.
Sum of balances over both domains is conserved once every packet is closed:
what B mints on recv, A burns from its escrow on ack.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from gateway.errors import RuleError
from gateway.ledger import consensus, txtypes
from gateway.ledger.state import ACTIVE, KIND_CONTRACT, DeviceRecord, StateView
from gateway.ledger.validate import body_keys, int_in, need_id
from gateway.xdomain import client as lc
from gateway.xdomain import recorded
from shared import cbor, errors, reasons, txdecode
from shared import tx as txm
from shared import xpacket as xp
from shared.messages_gateway import STATUS_FAILED, STATUS_OK
from shared.topics_gateway import is_domain_name

ESCROW = sha256(b"tl-xdomain-escrow").digest()[:16]  # the account of amounts in flight
MAX_ENTRIES = 4
RECV, ACK, TIMEOUT = "recv", "ack", "timeout"
KINDS = (ACK, RECV, TIMEOUT)


# ---- schemas (stateless, TxError) ---------------------------------------------------

def _domain(v: Any) -> None:
    if not is_domain_name(v):
        raise errors.TxError("bad-domain")


def _set_shape(k: Any, pubs: Any) -> None:
    if not isinstance(pubs, list) or consensus.check_set(k, pubs):
        raise errors.TxError("bad-valset")


def _entry_shape(e: Any) -> None:
    if not isinstance(e, list) or len(e) != 3 or not isinstance(e[0], bytes) \
            or not isinstance(e[1], list):
        raise errors.TxError("bad-entry")
    if e[2] is not None:
        if not isinstance(e[2], list) or len(e[2]) != 2:
            raise errors.TxError("bad-entry")
        _set_shape(*e[2])


def check_body(t: txm.Tx) -> None:
    b = t.body
    if t.type == txdecode.TYPE_CLIENT_CREATE:
        body_keys(b, (1, 2, 3, 4, 5, 6))
        _domain(b[1])
        _set_shape(b[2], b[3])
        if not int_in(b[4], lc.MIN_PERIOD_S, lc.MAX_PERIOD_S):
            raise errors.TxError("bad-period")
        _entry_shape([b[5], b[6], None])
    elif t.type == txdecode.TYPE_CLIENT_UPDATE:
        body_keys(b, (1, 2))
        _domain(b[1])
        if not isinstance(b[2], list) or not 1 <= len(b[2]) <= MAX_ENTRIES:
            raise errors.TxError("bad-entries")
        for e in b[2]:
            _entry_shape(e)
    elif t.type == txdecode.TYPE_SEND:
        body_keys(b, (1, 2, 3, 4, 5), (6,))
        _domain(b[1])
        need_id(b[2], "bad-recipient")
        if not int_in(b[3], 1, txm.MAX_AMOUNT):
            raise errors.TxError("bad-amount")
        if not int_in(b[4], 0, txm.MAX_AMOUNT) or not int_in(b[5], 0, txm.MAX_AMOUNT) \
                or not (b[4] or b[5]):
            raise errors.TxError("bad-timeout")
        if 6 in b and (not isinstance(b[6], bytes) or not b[6]):
            raise errors.TxError("bad-memo")
    else:
        body_keys(b, (1, 2, 3, 4), (5,))
        if b[1] not in KINDS:
            raise errors.TxError("bad-kind")
        if (b[1] == ACK) != (5 in b) or (5 in b and not isinstance(b[5], bytes)):
            raise errors.TxError("bad-ack")
        if not int_in(b[3], 0, txm.MAX_AMOUNT):
            raise errors.TxError("bad-height")
        xp.decode(b[2])  # TooLarge / TxError
        if not isinstance(b[4], list):
            raise errors.TxError("bad-proof")


# ---- packets ------------------------------------------------------------------------

def packet_of(t: txm.Tx, seq: int) -> bytes:
    b = t.body
    return xp.encode(t.domain, b[1], seq, t.sender, b[2], b[3], b[4], b[5], b.get(6, b""))


def next_seq(view: StateView, destination: str) -> int:
    raw = view.kv_get(xp.next_seq_key(destination))
    return 1 if raw is None else cbor.loads(raw) + 1


def _open_packet(view: StateView, t: txm.Tx, p: dict[int, Any]) -> None:
    """In the source: the packet must be open, as committed."""
    if p[1] != t.domain:
        raise RuleError(reasons.WRONG_DOMAIN, "packet-source")
    held = view.kv_get(xp.packet_key(p[2], p[3]))
    if held is None:
        if p[3] < next_seq(view, p[2]):
            raise RuleError(reasons.DUPLICATE, "packet-closed")
        raise RuleError(reasons.UNKNOWN_PACKET)
    if held != t.body[2]:
        raise RuleError(errors.BAD_PROOF, "packet-mismatch")


def _header(view: StateView, domain: str, height: int) -> lc.Trusted:
    h = lc.trusted(view, domain, height)
    if h is None:
        raise RuleError(errors.BAD_PROOF, "untrusted-height")
    return h


def _check_relay(view: StateView, t: txm.Tx, now: int | None) -> dict[int, Any]:
    b = t.body
    p = xp.decode(b[2])
    kind = b[1]
    if kind == RECV:
        if p[2] != t.domain:
            raise RuleError(reasons.WRONG_DOMAIN, "packet-destination")
        lc.usable(view, p[1], now)
        if view.kv_get(xp.receipt_key(p[1], p[3])) is not None:
            raise RuleError(reasons.DUPLICATE, "received")
        h = _header(view, p[1], b[3])
        if not xp.proves_packet(h.state_root, b[2], p, b[4]):
            raise RuleError(errors.BAD_PROOF, "packet-proof")
        return p
    _open_packet(view, t, p)
    lc.usable(view, p[2], now)
    h = _header(view, p[2], b[3])
    if kind == ACK:
        if not xp.proves_receipt(h.state_root, p, b[5], b[4]):
            raise RuleError(errors.BAD_PROOF, "ack-proof")
        return p
    if not xp.timed_out(p, h.height, h.time):
        raise RuleError(reasons.NOT_TIMED_OUT)
    if not xp.proves_receipt(h.state_root, p, None, b[4]):
        raise RuleError(errors.BAD_PROOF, "absence-proof")
    return p


# ---- precheck / apply -------------------------------------------------------------

def precheck(view: StateView, t: txm.Tx, rules: Any, rec: DeviceRecord) -> None:
    b = t.body
    if t.type == txdecode.TYPE_CLIENT_CREATE:
        if t.sender != consensus.domain_owner(rules):
            raise RuleError(errors.NOT_AUTHORIZED, "not-domain-owner")
        lc.check_create(b, t.domain, None)  # live or expired: known at the block's time
    elif t.type == txdecode.TYPE_CLIENT_UPDATE:
        lc.plan_update(view, b[1], b[2], None)
    elif t.type == txdecode.TYPE_SEND:
        if b[1] == t.domain:
            raise RuleError(reasons.WRONG_DOMAIN, "own-domain")
        lc.usable(view, b[1], None)
        if len(packet_of(t, next_seq(view, b[1]))) > xp.MAX_PACKET:
            raise RuleError(errors.TOO_LARGE, "packet-too-large")
        if rec.balance < t.fee + b[3]:
            raise RuleError(errors.INSUFFICIENT_FUNDS, "send")
    else:
        _check_relay(view, t, None)


def _move(view: Any, pid: bytes, delta: int) -> None:
    r = view.get(pid)
    if r is None:
        r = DeviceRecord(b"", 0, 0, KIND_CONTRACT)
    view.put(pid, r.with_seq_balance(r.last_seq, r.balance + delta))


def apply(view: Any, t: txm.Tx, rules: Any, block: Any) -> tuple[int, str, list[Any]]:
    """The effects; a check that needs the block (its time: expiry, timeout)
    and fails makes the tx included as failed with that reason: its fee and
    seq taken, nothing else changed (the type is isolated)."""
    try:
        return _apply(view, t, block)
    except RuleError as e:
        return STATUS_FAILED, e.reason, []


def _apply(view: Any, t: txm.Tx, block: Any) -> tuple[int, str, list[Any]]:
    b = t.body
    now = block.time
    if t.type == txdecode.TYPE_CLIENT_CREATE:
        old = lc.get(view, b[1])
        if old is not None and not old.frozen and not lc.expired(view, old, now):
            raise RuleError(reasons.DUPLICATE, "client-live")
        c, h = lc.check_create(b, t.domain, now)
        lc.clear_headers(view, b[1])
        lc.write(view, lc.Plan(c, [h]))
        return STATUS_OK, "", [["client", b[1], h.height]]
    if t.type == txdecode.TYPE_CLIENT_UPDATE:
        plan = lc.plan_update(view, b[1], b[2], now)
        lc.write(view, plan)
        if plan.evidence is not None:
            return STATUS_OK, "", [["client-frozen", b[1]]]
        return STATUS_OK, "", [["client-update", b[1], plan.client.latest]]
    if t.type == txdecode.TYPE_SEND:
        lc.usable(view, b[1], now)
        seq = next_seq(view, b[1])
        sender = view.get(t.sender)
        if sender.balance < b[3]:
            raise RuleError(errors.INSUFFICIENT_FUNDS, "send")
        packet = packet_of(t, seq)
        view.kv_put(xp.next_seq_key(b[1]), cbor.dumps(seq))
        view.kv_put(xp.packet_key(b[1], seq), packet)
        _move(view, t.sender, -b[3])
        _move(view, ESCROW, b[3])
        return STATUS_OK, "", [["xsend", b[1], seq, b[3]]]
    p = _check_relay(view, t, now)
    if b[1] == RECV:
        if xp.timed_out(p, block.height, now):
            raise RuleError(reasons.TIMED_OUT)
        to = view.get(p[5])
        if to is None or to.status != ACTIVE:
            ack = xp.ack(xp.ACK_FAILED, errors.UNKNOWN_DEVICE)
        else:
            _move(view, p[5], p[6])
            ack = xp.ack(xp.ACK_OK)
        view.kv_put(xp.receipt_key(p[1], p[3]), ack)
        return STATUS_OK, "", [["xrecv", p[1], p[3], ack]]
    view.kv_put(xp.packet_key(p[2], p[3]), None)
    _move(view, ESCROW, -p[6])
    ok = b[1] == ACK and _ack_ok(b[5])
    if not ok:
        _move(view, p[4], p[6])
    return STATUS_OK, "", [["x" + b[1], p[2], p[3], "burnt" if ok else "refunded"]]


def _ack_ok(ack: bytes) -> bool:
    try:
        v = cbor.loads(ack)
    except errors.TLError:
        return False
    return isinstance(v, list) and len(v) == 2 and v[0] == xp.ACK_OK


TX_TYPES = tuple(txtypes.TxType(code, "xdomain", check_body, precheck, apply, isolated=True)
                 for code in (txdecode.TYPE_CLIENT_CREATE, txdecode.TYPE_CLIENT_UPDATE,
                              txdecode.TYPE_SEND, txdecode.TYPE_RELAY)) + (recorded.TX_TYPE,)
