"""The JSON documents of the dashboard's API (/api/v1, docs/API.md): pure
functions from store records (gateway/web/reader.py) and the node's state
to plain dicts of str, int, float, bool, list and dict (bytes as lowercase
hex). Nothing here does I/O; the pages (gateway/web/pages.py) render the
same documents as HTML.

Input checks live here too: `hex_arg`, `id_arg`, `int_arg` raise WebError
(gateway/errors.py: bad-query, HTTP 400) for a malformed value, before
anything reaches SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from gateway.db.chain_tables import TxRecord
from gateway.db.render import body_text
from gateway.db.store import BlockRecord
from gateway.errors import BAD_QUERY, NOT_FOUND, WebError
from gateway.firmware import rules as firmware_rules
from gateway.ledger import keys
from gateway.ledger.state import DeviceRecord, State
from gateway.market.ledger import rules as market
from gateway.market.ledger.matching import trust_score
from gateway.trust import standing
from gateway.web.reader import BlockRow, ReadingRow
from shared import cbor, errors, merkle, messages, txnames
from shared import tx as txm

HEX = re.compile(r"[0-9a-f]+")
RATE_WINDOW_S = 60  # tx/s and blocks/min are measured over the last minute
# market events whose receipts move value (gateway/contracts/builtin.py)
PAYMENT_EVENTS = ("delivery-paid", "delivery-failed", "agreement-closed", "demand-closed")


# -- input ------------------------------------------------------------------------
def hex_arg(text: str | None, what: str, max_chars: int, min_chars: int = 1) -> str:
    """A lowercase hex string of min_chars .. max_chars characters."""
    t = (text or "").strip().lower()
    if not min_chars <= len(t) <= max_chars or not HEX.fullmatch(t):
        raise WebError(BAD_QUERY, f"{what} must be {min_chars}-{max_chars} hex digits")
    return t


def id_arg(text: str | None, what: str, size: int) -> bytes:
    """Exactly `size` bytes given as hex."""
    return bytes.fromhex(hex_arg(text, what, 2 * size, 2 * size))


def int_arg(text: str | None, what: str, lo: int, hi: int, default: int | None = None) -> int:
    """A decimal integer in lo .. hi (`default` when absent)."""
    if text is None or text == "":
        if default is None:
            raise WebError(BAD_QUERY, f"{what} is required")
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", text):
        raise WebError(BAD_QUERY, f"{what} must be an integer")
    v = int(text)
    if not lo <= v <= hi:
        raise WebError(BAD_QUERY, f"{what} must be {lo} .. {hi}")
    return v


def not_found(what: str) -> WebError:
    return WebError(NOT_FOUND, f"no such {what}")


# -- values -----------------------------------------------------------------------
def jsonable(v: Any) -> Any:
    """CBOR values as JSON: bytes as hex, map keys as strings."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, cbor.Tag):
        return {"tag": v.tag, "value": jsonable(v.value)}
    return v


def decimal_text(value: int, scale: int) -> str:
    """value * 10^scale as a plain decimal (2150, -2 -> "21.50")."""
    return format(Decimal(value).scaleb(scale), "f")


def rates(blocks: Iterable[BlockRow], now: float) -> tuple[float, int]:
    """(tx/s, blocks/min) over the RATE_WINDOW_S before `now`."""
    since = now - RATE_WINDOW_S
    n_blocks = n_txs = 0
    for b in blocks:
        if b.time > since:
            n_blocks += 1
            n_txs += b.n_txs
    return n_txs / RATE_WINDOW_S, n_blocks


# -- documents ----------------------------------------------------------------------
def overview(domain: str, consensus: str, head: BlockRecord, recent: list[BlockRow],
             devices: int, online: int, agreements_open: int, now: float) -> dict[str, Any]:
    tps, bpm = rates(recent, now)
    return {"domain": domain, "consensus": consensus, "height": head.height,
            "hash": head.hash.hex(), "time": head.time, "tx_per_s": round(tps, 3),
            "blocks_per_min": bpm, "devices": devices, "devices_online": online,
            "agreements_open": agreements_open}


def block_row(b: BlockRow) -> dict[str, Any]:
    return {"height": b.height, "hash": b.hash.hex(), "time": b.time, "txs": b.n_txs}


def tx_row(t: TxRecord) -> dict[str, Any]:
    return {"id": t.id.hex(), "height": t.height, "index": t.idx, "sender": t.sender.hex(),
            "seq": t.seq, "type": txnames.name(t.type),
            "status": "ok" if t.status == messages.STATUS_OK else "failed", "reason": t.reason}


def block(b: BlockRecord, txs: list[TxRecord]) -> dict[str, Any]:
    f = b.fields
    return {"height": b.height, "hash": b.hash.hex(), "time": b.time, "txs": b.n_txs,
            "header": {k: jsonable(v) for k, v in f.items()},
            "transactions": [tx_row(t) for t in txs]}


def tx(t: TxRecord, b: BlockRecord, receipt: Mapping[int, Any]) -> dict[str, Any]:
    """A committed transaction: decoded body by type name, its receipt, and
    the receipt's Merkle proof against the block header's receipts_root
    (also checked here, server side; the page checks it again in the browser)."""
    try:
        parsed = txm.decode(t.message)
        body: Any = jsonable(parsed.body)
        text, fee = body_text(parsed.type, parsed.body), parsed.fee
        if text.startswith("{"):  # no text form of its own: its fields as JSON
            text = json.dumps(body, separators=(", ", ": "))
    except errors.TLError as e:
        body, text, fee = None, f"undecodable ({e})", None
    leaf = messages.receipt_leaf(t.id, t.status, t.reason, t.events)
    root = b.fields["receipts_root"]
    index, size, path = receipt[messages.M_INDEX], receipt[messages.M_SIZE], \
        receipt[messages.M_PROOF]
    return {**tx_row(t), "fee": fee, "body": body, "body_text": text,
            "size_bytes": len(t.message), "block_hash": b.hash.hex(), "time": b.time,
            "receipt": {"status": "ok" if t.status == messages.STATUS_OK else "failed",
                        "reason": t.reason, "events": jsonable(t.events)},
            "proof": {"leaf": leaf.hex(), "index": index, "size": size,
                      "path": [bytes(p).hex() for p in path], "receipts_root": root.hex(),
                      "verified_by_node": merkle.verify(leaf, index, size, list(path), root)}}


def reading(r: ReadingRow) -> dict[str, Any]:
    return {"height": r.height, "time": r.time, "tx": r.tx_id.hex(), "value": r.value,
            "scale": r.scale, "channel": r.channel, "text": decimal_text(r.value, r.scale)}


def trust(state: State, device: bytes, kept: bool) -> dict[str, Any] | None:
    """A principal's trust as the chain records it (docs/TRUST.md): level and
    score where the domain keeps trust figures (`kept`: genesis `trust =
    true`), and a supplier's delivery
    record in the agreement contract with its delivery score
    (gateway/market/ledger/matching.py); None if it has neither."""
    out: dict[str, Any] = {}
    if kept:
        out["level"] = standing.level_of(state, device)
        out["score"] = standing.score_of(state, device)
    rec = market.supplier_record(state, device)
    if rec:
        out["deliveries"] = {**{str(k): v for k, v in rec.items() if isinstance(v, int)},
                             "score": trust_score(rec)}
    return out or None


def device(i: bytes, r: DeviceRecord, online: bool, latest: ReadingRow | None,
           trust_record: dict[str, Any] | None, state: State) -> dict[str, Any]:
    return {"id": i.hex(), "kind": r.kind, "role": r.node or r.kind, "status": r.status,
            "online": online, "owner": r.owner.hex(), "balance": r.balance,
            "last_seq": r.last_seq, "trust": trust_record,
            "firmware": firmware_rules.installed(state, i),
            "last_reading": reading(latest) if latest else None}


def devices(items: Iterable[tuple[bytes, DeviceRecord]], online: set[str],
            latest: Mapping[bytes, ReadingRow], state: State,
            trust_kept: bool) -> list[dict[str, Any]]:
    return [device(i, r, i.hex() in online, latest.get(i), trust(state, i, trust_kept), state)
            for i, r in items]


def firmware_releases(state: State) -> list[dict[str, Any]]:
    """The firmware releases recorded on chain (docs/OTA.md)."""
    return firmware_rules.releases(state)


def offers(state: State, limit: int) -> list[dict[str, Any]]:
    out = []
    for _, v in state.kv_range(keys.OFFERS):
        o = market.offer_of(v)
        out.append({"supplier": o.supplier.hex(), "service": o.service, "unit": o.unit,
                    "price": o.price, "interval_s": o.interval_s, "location": o.location,
                    "expires": o.expires, "published": list(o.published)})
        if len(out) >= limit:
            break
    return out


def demands(state: State, limit: int) -> list[dict[str, Any]]:
    out = []
    for k, v in state.kv_range(keys.DEMANDS):
        d = cbor.loads(v)
        out.append({"id": k[-16:].hex(), "buyer": d[market.D_BUYER].hex(),
                    "service": d[market.D_SERVICE], "max_price": d[market.D_MAX],
                    "quantity": d[market.D_QTY], "until": d[market.D_UNTIL],
                    "policy": d[market.D_POLICY], "location": d.get(market.D_LOCATION, "")})
        if len(out) >= limit:
            break
    return out


def agreements(state: State, limit: int) -> list[dict[str, Any]]:
    """The agreement contract's records, open ones first."""
    out = []
    for k, v in state.kv_range(market.AGREEMENTS):
        a = cbor.loads(v)
        out.append({"id": k[-16:].hex(), "state": a.get("state"),
                    "service": a.get("service"), "buyer": jsonable(a.get("buyer")),
                    "supplier": jsonable(a.get("supplier")), "price": a.get("price"),
                    "quantity": a.get("quantity"), "delivered": a.get("next_index", 0),
                    "paid": a.get("paid", 0), "failed": a.get("failed", 0),
                    "remaining": a.get("remaining", 0), "expiry": a.get("expiry")})
    out.sort(key=lambda a: (a["state"] != "open", -(a["expiry"] or 0)))
    return out[:limit]


def _short(v: Any) -> str:
    return v[:12] if isinstance(v, str) else str(v)


def payment_text(event: str, d: list[Any]) -> str:
    """A payment event's fields in words (gateway/contracts/builtin.py's
    agreement events, the ledger's demand-closed)."""
    try:
        if event == "delivery-paid":
            return "agreement %s batch %s: %s paid to %s (operator fee %s)" % (
                _short(d[0]), d[1], d[3], _short(d[2]), d[4])
        if event == "delivery-failed":
            return "agreement %s batch %s: not paid to %s (%s)" % (
                _short(d[0]), d[1], _short(d[2]), d[3])
        if event == "agreement-closed":
            return "agreement %s closed: %s back to the buyer %s" % (
                _short(d[0]), d[3], _short(d[1]))
        if event == "demand-closed":
            return "demand %s closed: %s back to the buyer %s" % (
                _short(d[0]), d[2], _short(d[1]))
    except (IndexError, TypeError):
        pass
    return json.dumps(d)


def payments(rows: Iterable[tuple[int, int, bytes, list[Any]]]) -> list[dict[str, Any]]:
    """The payment events (PAYMENT_EVENTS) in the latest market receipts."""
    out = []
    for height, when, tx_id, events in rows:
        for e in events:
            if not isinstance(e, list) or not e:
                continue
            if len(e) >= 2 and e[1] in PAYMENT_EVENTS:  # a contract's: [address, name, ...]
                name, detail = e[1], jsonable(e[2:])
            elif e[0] in PAYMENT_EVENTS:  # the ledger's own: [name, ...]
                name, detail = e[0], jsonable(e[1:])
            else:
                continue
            out.append({"height": height, "time": when, "tx": tx_id.hex(), "event": name,
                        "detail": detail, "text": payment_text(name, detail)})
    return out


def market_doc(state: State, pay_rows: Iterable[tuple[int, int, bytes, list[Any]]],
               streams: list[tuple[bytes, int, float]], limit: int) -> dict[str, Any]:
    return {"offers": offers(state, limit), "demands": demands(state, limit),
            "agreements": agreements(state, limit), "payments": payments(pay_rows),
            "streams": [{"agreement": a.hex(), "readings": n, "last_received": last}
                        for a, n, last in streams]}


def search_result(kind: str, ident: str, label: str) -> dict[str, str]:
    """One search hit: kind (block, tx, device), its id and a line to show."""
    return {"kind": kind, "id": ident, "label": label}
