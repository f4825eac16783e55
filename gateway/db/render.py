"""Plain-text views of a stored chain for the `thingledger` CLI.

Pure rendering: each function takes store records (or a replay Report) and
returns aligned text; nothing here writes to the database.

    table(headers, rows) -> str
    chain_summary(store, last=20) -> str      head + the last blocks
    block_detail(block, txs) -> str           one header + its transactions
    tx_detail(tx, block) -> str               one transaction with its receipt
    devices_table(devices, firmware) -> str   id, public key, firmware, last seq, balance
    principals_table(devices) -> str          id, kind, status, owner, rights
    nodes_table(devices) -> str               joined nodes: id, label, assigned full node
    report_text(report) -> str                result of replay.verify_chain
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.db.store import BlockRecord, Store, TxRecord
from gateway.db.verify import Report
from gateway.ledger.state import DeviceRecord
from shared import errors, txnames
from shared import tx as txm
from shared.messages import STATUS_OK


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], int) for r in rows) and bool(rows)
               for i in range(len(headers))]
    out = []
    for r in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric,
                                                                         strict=True)]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def _time(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _status(status: int, reason: str) -> str:
    return "ok" if status == STATUS_OK else "failed:" + reason


def type_name(type_: int) -> str:
    """The type's name (shared/txnames.py), never its number."""
    return txnames.name(type_)


def _fmt(v: Any) -> str:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _short(v: Any) -> str:
    return v.hex() if isinstance(v, bytes) else str(v)


def _identity_text(type_: int, b: dict[Any, Any]) -> str | None:
    g = b.get
    if type_ == txm.TYPE_CLAIM:
        pub = g(1)
        dev = txm.device_id(pub) if isinstance(pub, bytes) else "?"
        return "device=%s pubkey=%s" % (_short(dev), _short(pub))
    if type_ == txm.TYPE_OWNER_TRANSFER:
        pub = g(2)
        new = txm.device_id(pub) if isinstance(pub, bytes) else "?"
        return "device=%s new_owner=%s" % (_short(g(1)), _short(new))
    if type_ in (txm.TYPE_GRANT, txm.TYPE_REVOKE_RIGHT):
        return "principal=%s right=%s device=%s" % (_short(g(1)), g(2), _short(g(3)))
    if type_ == txm.TYPE_ROTATE_KEY:
        return "new_pubkey=%s" % _short(g(1))
    if type_ == txm.TYPE_RETIRE:
        return "device=%s mode=%s" % (_short(g(1)), g(2))
    if type_ == txm.TYPE_RECOVER:
        return "device=%s new_pubkey=%s" % (_short(g(1)), _short(g(2)))
    if type_ == txm.TYPE_NODE_JOIN:
        hw = g(2)
        hw_text = " ".join("%s=%s" % kv for kv in sorted(hw.items())) if isinstance(hw, dict) \
            else _fmt(hw)
        return "label=%s %s%s" % (g(1), hw_text, " certified" if 3 in b else "")
    if type_ == txm.TYPE_NODE_ASSIGN:
        return "light=%s full=%s" % (_short(g(1)), _short(g(2)))
    return None


def body_text(type_: int, body: dict[Any, Any]) -> str:
    if type_ == txm.TYPE_READING:
        v, s = body.get(1), body.get(2)
        text = "value=%s scale=%s" % (v, s)
        if isinstance(v, int) and isinstance(s, int) and s:
            text += " (%s)" % format(Decimal(v).scaleb(s), "f")
        if 3 in body:
            text += " channel=%s" % body[3]
        return text
    if type_ == txm.TYPE_TRANSFER:
        return "to=%s amount=%s" % (_fmt(body.get(1)), body.get(2))
    if type_ == txm.TYPE_REGISTER:
        return "pubkey=%s" % _fmt(body.get(1))
    text = _identity_text(type_, body)
    return text if text is not None else _fmt(body)


def chain_summary(store: Store, last: int = 20) -> str:
    head = store.head()
    if head is None:
        return "empty chain (no genesis block)"
    lines = [
        "domain      %s" % head.fields["domain"],
        "height      %d" % head.height,
        "head hash   %s" % head.hash.hex(),
        "state root  %s" % head.fields["state_root"].hex(),
        "blocks      %d" % store.block_count(),
        "txs         %d" % store.tx_count(),
        "",
    ]
    first = max(0, head.height - last + 1)
    rows = [(b.height, _time(b.time), b.n_txs, b.hash.hex()) for b in store.iter_blocks(first)]
    return "\n".join(lines) + table(("height", "time", "txs", "hash"), rows)


def block_detail(block: BlockRecord, txs: Sequence[TxRecord]) -> str:
    f = block.fields
    lines = [
        "height         %d" % block.height,
        "hash           %s" % block.hash.hex(),
        "time           %s (%d)" % (_time(f["time"]), f["time"]),
        "domain         %s" % f["domain"],
        "version        %d" % f["version"],
        "prev_hash      %s" % f["prev_hash"].hex(),
        "tx_root        %s" % f["tx_root"].hex(),
        "receipts_root  %s" % f["receipts_root"].hex(),
        "state_root     %s" % f["state_root"].hex(),
        "proposer       %s" % f["proposer"].hex(),
        "txs            %d" % len(txs),
    ]
    if "validators" in f:  # version 2 (docs/CONSENSUS.md)
        lines[-1:-1] = ["validators     %s" % f["validators"].hex(),
                        "next_validators %s" % f["next_validators"].hex()]
    if txs:
        rows = [(t.idx, t.id.hex(), t.sender.hex(), t.seq, type_name(t.type),
                 _status(t.status, t.reason)) for t in txs]
        lines += ["", table(("idx", "tx id", "sender", "seq", "type", "status"), rows)]
    return "\n".join(lines)


def tx_detail(t: TxRecord, block: BlockRecord | None) -> str:
    try:
        parsed = txm.decode(t.message)
        body, fee = body_text(parsed.type, parsed.body), str(parsed.fee)
    except errors.TLError as e:
        body, fee = "undecodable (%s)" % e, "?"
    lines = [
        "tx id     %s" % t.id.hex(),
        "height    %d" % t.height,
        "index     %d" % t.idx,
        "block     %s" % (block.hash.hex() if block else "?"),
        "sender    %s" % t.sender.hex(),
        "seq       %d" % t.seq,
        "type      %s" % type_name(t.type),
        "fee       %s" % fee,
        "body      %s" % body,
        "status    %s" % _status(t.status, t.reason),
        "events    %s" % _fmt(t.events),
        "size      %d bytes" % len(t.message),
    ]
    return "\n".join(lines)


def devices_table(devices: Sequence[tuple[bytes, DeviceRecord]],
                  firmware: Mapping[bytes, str] | None = None) -> str:
    """`firmware`: each device's firmware as text (gateway/firmware/rules.py
    firmware_text); a device without a report runs what it was flashed with."""
    fw = firmware or {}
    rows = [(i.hex(), r.pubkey.hex(), fw.get(i, "-"), r.last_seq, r.balance) for i, r in devices]
    return table(("id", "public key", "firmware", "last seq", "balance"), rows)


def principals_table(devices: Sequence[tuple[bytes, DeviceRecord]]) -> str:
    """Who is who: kind, status, owner and the rights others hold on it."""
    rows = []
    for i, r in devices:
        kind = r.kind + (" (claimant)" if r.claimant else "")
        rights = "; ".join("%s:%s" % (p.hex()[:8], ",".join(rs)) for p, rs in r.acl)
        rows.append((i.hex(), kind, r.status, r.owner.hex() if r.owner else "-",
                     rights or "-"))
    return table(("id", "kind", "status", "owner", "rights (principal:rights)"), rows)


def nodes_table(devices: Sequence[tuple[bytes, DeviceRecord]]) -> str:
    """Nodes that joined (NODE_JOIN): id, label, status, assigned full node."""
    rows = [(i.hex(), r.node, r.status, r.assigned.hex() if r.assigned else "-")
            for i, r in devices if r.node]
    if not rows:
        return "no nodes have joined"
    return table(("id", "label", "status", "assigned full node"), rows)


def report_text(rep: Report) -> str:
    if rep.ok:
        assert rep.head_hash is not None and rep.state_root is not None
        return "\n".join([
            "chain OK",
            "blocks      %d (height 0..%s)" % (rep.blocks, rep.head_height),
            "txs         %d" % rep.txs,
            "devices     %d" % rep.devices,
            "head hash   %s" % rep.head_hash.hex(),
            "state root  %s" % rep.state_root.hex(),
        ])
    e = rep.error
    assert e is not None
    if e.height < 0:  # the database file itself (replay.FILE): no block was replayed
        return "chain verification FAILED at %s" % e
    return "chain verification FAILED at %s\n(%d blocks verified before it)" % (e, rep.blocks)
