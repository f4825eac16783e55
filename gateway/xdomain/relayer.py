"""The relayer's work, one pass at a time (docs/CROSSDOMAIN.md, "Relayer"):
reads both domains' stores (read-only), decides what to submit, and submits
it through a callable (MQTT in tools/relay.py, in-process in the tests). It
holds no rights: every tx it sends is checked by the receiving domain's
gateways like anybody's, so a relayer can only delay or drop, never forge.

One pass from A to B:
- every open packet of A for B (xp<B> 00 <seq> in A's state):
  - B holds its receipt: update A's client of B to B's head, then RELAY ack
    in A with the receipt's proof;
  - B's head is past its timeout and holds no receipt: update A's client of
    B, then RELAY timeout in A with the proof of absence;
  - otherwise: update B's client of A to A's head, then RELAY recv in B with
    the packet's proof.
A header update names the head and its certificate; when A's head is
finalised by a set other than the one B's client trusts, each change of A's
set since the client's latest header is followed in order: the header of the
height before the change (which names the new set as the next one), then the
change's first header with the new set's keys (several updates if they are
more than a CLIENT_UPDATE holds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.db.store import BlockRecord, Store
from gateway.ledger import consensus, keys
from gateway.xdomain import client as lc
from gateway.xdomain.rules import ACK, MAX_ENTRIES, RECV, TIMEOUT
from shared import cbor, txdecode
from shared import tx as txm
from shared import xpacket as xp

# (domain, signed tx) -> (committed with status ok, reason)
Submit = Callable[[str, bytes], tuple[bool, str]]


@dataclass
class RelayKey:
    """The relayer's key (any registered principal of both domains)."""

    private: bytes
    id: bytes
    next_seq: Callable[[], int]

    def make(self, type_: int, domain: str, body: dict[int, Any]) -> bytes:
        return txm.make(self.private, self.id, type_, domain, self.next_seq(), 0, body)


@dataclass
class Chain:
    domain: str
    store: Store


@dataclass
class Action:
    what: str  # "update", "recv", "ack", "timeout"
    domain: str  # where it was submitted
    seq: int  # the packet's sequence (0 for an update)
    ok: bool
    reason: str


@dataclass
class Pass:
    actions: list[Action] = field(default_factory=list)

    def done(self, what: str) -> list[Action]:
        return [a for a in self.actions if a.what == what and a.ok]


def _client_of(chain: Chain, counterparty: str) -> lc.Client | None:
    rows = chain.store.kv_range(xp.client_key(counterparty), 1)
    if not rows or rows[0][0] != xp.client_key(counterparty):
        return None
    return lc.Client.decode(counterparty, rows[0][1])


def _schedule(store: Store) -> consensus.Schedule | None:
    rows = store.kv_range(keys.VALSETS, 1)
    if not rows or rows[0][0] != keys.VALSETS:
        return None
    return [(h, consensus.ValidatorSet(k, tuple(p))) for h, k, p in cbor.loads(rows[0][1])]


def validator_sets(store: Store) -> dict[bytes, list[Any]]:
    """Every validator set the domain has had, by hash: [k, pubkeys]. The
    state's schedule keeps the sets of past heights (gateway/ledger/consensus.py;
    a removal after a proved double vote is only there); chains written by
    earlier versions kept only the current and the next set, so the committed
    VALSET transactions are read too. A store read over MQTT
    (tools/remote_store.py) asks its gateway for the list (`valsets`) instead;
    each set is checked against the hash a header names before it is used."""
    remote = getattr(store, "validator_sets", None)
    if remote is not None:
        return {consensus.ValidatorSet(k, tuple(p)).hash: [k, list(p)] for k, p in remote()}
    out = {}
    s = _schedule(store)
    for _, vs in s or []:
        out[vs.hash] = [vs.threshold, list(vs.pubkeys)]
    for t in store.txs_of_type(consensus.TYPE_VALSET):
        if t.status == 0:
            b = txm.decode(t.message).body
            vs = consensus.ValidatorSet(b[2], tuple(b[3]))
            out[vs.hash] = [vs.threshold, list(vs.pubkeys)]
    return out


def _entry(store: Store, blk: BlockRecord, vset: list[Any] | None) -> list[Any] | None:
    cert = store.certificate(blk.height)
    return None if cert is None else [blk.header_bytes, cert, vset]


def update_entries(src: Store, head: BlockRecord, c: lc.Client) -> list[list[Any]] | None:
    """The CLIENT_UPDATE entries that make client `c` (of `src`'s domain)
    trust `head` (the caller checked it does not yet); None if a header on
    the way is not final or a set is unknown. A head below the client's
    latest (another relayer went further) is sent alone: the client takes an
    older header of a set it trusts. Every validator-set change of `src`
    since the client's latest header is followed in order (the headers in
    between are read for their `validators` field): the header before the
    change (signed by the old set, naming the new one as next), then the new
    set's first header with the new set's keys (for the last change, the
    head). More than MAX_ENTRIES entries go in several updates
    (Relayer.update)."""
    if c.latest >= head.height or head.fields.get("validators") == c.set_hash:
        e = _entry(src, head, None)
        return None if e is None else [e]
    sets = validator_sets(src)
    changes = []  # the first block of each set after the client's, in order
    current = c.set_hash
    for h in range(c.latest + 1, head.height + 1):
        blk = head if h == head.height else src.get_block(h)
        if blk is None:
            return None
        if blk.fields.get("validators") != current:
            current = blk.fields.get("validators")
            changes.append(blk)
    out: list[list[Any]] = []
    done = c.latest  # the highest height sent (or trusted already)
    for i, first in enumerate(changes):
        vset = sets.get(first.fields.get("validators"))
        if vset is None:
            return None
        last = i == len(changes) - 1
        for blk, with_set in ((src.get_block(first.height - 1), None),
                              (head if last else first, vset)):
            if blk is None:
                return None
            if blk.height <= done:
                continue
            e = _entry(src, blk, with_set)
            if e is None:
                return None
            out.append(e)
            done = blk.height
    return out


class Relayer:
    """Relays the packets of `a` to `b` (and their acks and timeouts back)."""

    def __init__(self, a: Chain, b: Chain, signer: RelayKey, submit: Submit) -> None:
        self.a, self.b = a, b
        self.signer = signer
        self.submit = submit

    def _send(self, out: Pass, what: str, domain: str, seq: int, type_: int,
              body: dict[int, Any]) -> bool:
        ok, reason = self.submit(domain, self.signer.make(type_, domain, body))
        out.actions.append(Action(what, domain, seq, ok, reason))
        return ok

    def update(self, at: Chain, of: Chain, head: BlockRecord, out: Pass | None = None) -> bool:
        """Make `at`'s client of `of` trust `head` (of `of`)."""
        out = out if out is not None else Pass()
        c = _client_of(at, of.domain)
        if c is None:
            out.actions.append(Action("update", at.domain, 0, False, "no-client"))
            return False
        k = xp.header_key(of.domain, head.height)
        if any(key == k for key, _ in at.store.kv_range(k, 1)):
            return True  # trusted already
        entries = update_entries(of.store, head, c)
        if entries is None:
            return False
        for i in range(0, len(entries), MAX_ENTRIES):
            if not self._send(out, "update", at.domain, 0, txdecode.TYPE_CLIENT_UPDATE,
                              {1: of.domain, 2: entries[i:i + MAX_ENTRIES]}):
                return False
        return True

    def run_once(self) -> Pass:
        out = Pass()
        a, b = self.a, self.b
        prefix = xp.PACKET + b.domain.encode() + b"\x00"
        for _key, packet in a.store.kv_range(prefix):
            p = xp.decode(packet)
            got = b.store.prove_kv(xp.receipt_key(a.domain, p[3]))
            if got is None:
                continue
            bhead, ack, proof = got
            if ack is not None or xp.timed_out(p, bhead.height, bhead.time):
                if not self.update(a, b, bhead, out):
                    continue
                if ack is not None:
                    self._send(out, ACK, a.domain, p[3], txdecode.TYPE_RELAY,
                               {1: ACK, 2: packet, 3: bhead.height, 4: proof, 5: ack})
                else:
                    self._send(out, TIMEOUT, a.domain, p[3], txdecode.TYPE_RELAY,
                               {1: TIMEOUT, 2: packet, 3: bhead.height, 4: proof})
                continue
            mine = a.store.prove_kv(xp.packet_key(b.domain, p[3]))
            if mine is None or mine[1] != packet:
                continue  # closed meanwhile
            ahead, _, proof = mine
            if self.update(b, a, ahead, out):
                self._send(out, RECV, b.domain, p[3], txdecode.TYPE_RELAY,
                           {1: RECV, 2: packet, 3: ahead.height, 4: proof})
        return out
