"""A domain's chain read over MQTT alone (docs/PROTOCOL.md, "Chain
queries"): RemoteStore has the read methods of gateway/db/store.Store that
the relayer (gateway/xdomain/relayer.py, tools/relay.py) and the
cross-domain buyer (tools/xbuy.py) use, answered by the domain's gateways
(gateway/node/queries.py) on tl/<d>/q/<requester>/req -> .../res.

Nothing an answer says is trusted by the chains: every value the relayer
or the buyer submits carries its proof against a header and certificate the
receiving chain checks (a lying gateway can delay a relay, never forge
one). Here a block's hash is checked to be its header's SHA-256 and a
value's proof to be for the key asked; the rest is checked on chain.

A requester may name several brokers of the domain (its NATS nodes, or the
brokers of two of its gateways): a broker whose gateways are silent or whose
connection drops is passed over for the next (tools/failover.py).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tomllib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from gateway.db.chain_tables import TxRecord
from gateway.db.genesis_files import GenesisError, from_dict
from gateway.db.store import BlockRecord
from gateway.ledger.genesis import Genesis
from gateway.ledger.state import DeviceRecord
from shared import cbor, errors, reasons
from shared import chainquery as cq
from tools.failover import Brokers
from tools.mqtt_ask import Line, Unanswered, client_id

MAX_ITEMS = 100_000  # items one paged read gathers at most (devices(), kv_range())
CACHED = 64  # certificates kept from block answers


class RemoteError(RuntimeError):
    """No usable answer: `reason` is the gateways' refusal code, or
    `no-answer` (none within the timeout) or `bad-answer`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(reason + (": " + detail if detail else ""))


class QueryClient:
    """Asks one domain's gateways over one MQTT connection; thread-safe.

    `brokers`: one URL, several (a comma-separated string, a sequence, or a
    tools/failover.Brokers shared with a submitter), or a connection of the
    caller's (tools/mqtt_ask.Line: the one its login holds to the domain,
    shared with its submissions and subscriptions; held until `close`):
    when the broker in use gives no answer within `timeout`, or its
    connection drops, the request is asked again through the next one,
    which is kept from then on (RemoteError `no-answer` once every broker
    failed for one request). The exchange is the Line's, as a submission's."""

    def __init__(self, brokers: str | Sequence[str] | Brokers | Line, domain: str,
                 requester: str, *, login: tuple[str, str] | None = None,
                 timeout: float = 15.0) -> None:
        if not cq.is_requester(requester):
            raise ValueError("bad requester name %r" % requester)
        self.domain, self.requester, self.timeout = domain, requester, timeout
        own = not isinstance(brokers, Line)
        self.line = Line(brokers, client_id(requester, "q"), login=login, timeout=timeout) \
            if own else brokers.hold()
        self.brokers = self.line.brokers
        self.login = self.line.login
        self._ids = itertools.count(1)
        self._salt = os.urandom(4)
        self.closed = False
        try:
            self.line.up(timeout, since=0 if own else None)
        except Unanswered as e:
            self.line.release()
            raise RemoteError("no-answer", str(e)) from None

    @property
    def url(self) -> str:
        """The broker in use."""
        return self.line.url

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.line.release()

    def ask(self, op: str, arg: Any = None, limit: int | None = None,
            after: Any = None) -> tuple[Any, bool]:
        """(result, more) of one request, asked through the next broker when
        one does not answer in time or its connection drops; RemoteError if
        refused (a gateway's answer: not asked again elsewhere) or if no
        broker answered."""
        rid = self._salt + next(self._ids).to_bytes(4, "big")

        def pick(got: bytes) -> tuple[Any, bool] | None:
            try:
                aid, reason, detail, result, more = cq.parse_answer(got)
            except errors.TLError:
                return None  # not an answer (anyone may write to an open broker)
            if aid != rid:
                return None  # another gateway's copy of an earlier answer
            if reason:
                raise RemoteError(reason, detail)
            return result, more
        try:
            return self.line.ask(cq.request_topic(self.domain, self.requester),
                                 cq.request(op, rid, arg, limit, after),
                                 cq.answer_topic(self.domain, self.requester), pick, qos=0,
                                 what=op, timeout=self.timeout)
        except Unanswered as e:
            raise RemoteError("no-answer", str(e)) from None


PINNED = ("domain", "authority", "consensus", "validators", "threshold", "owner")


def pin(stated: Genesis, pinned: Genesis | None, who: str) -> Genesis:
    """`pinned` (a genesis file the caller holds) if `stated` (what `who`
    states) is the same genesis, `stated` if nothing is pinned; RemoteError
    genesis-mismatch naming what differs (the keys first: a gateway feeding
    another authority or validator set would make its receipts check)."""
    if pinned is None or stated == pinned:
        return stated if pinned is None else pinned
    differ = [f for f in PINNED if getattr(stated, f) != getattr(pinned, f)] or ["the genesis"]
    raise RemoteError(reasons.GENESIS_MISMATCH, "%s states another %s than the pinned genesis"
                      % (who, ", ".join(differ)))


def _block(row: Any) -> BlockRecord:
    try:
        height, h, t, n, hb, signed = row
        b = BlockRecord(height, h, t, n, hb, signed)
    except (TypeError, ValueError):
        raise RemoteError("bad-answer", "block") from None
    if not isinstance(hb, bytes) or hashlib.sha256(hb).digest() != h:
        raise RemoteError("bad-answer", "block hash")
    return b


def _device(leaf: bytes) -> tuple[bytes, DeviceRecord]:
    try:
        i, pub, seq, bal, kind, status, owner, acl, claimant, node, assigned = cbor.loads(leaf)
        return i, DeviceRecord(pub, seq, bal, kind, status, owner,
                               tuple((p, tuple(r)) for p, r in acl), bool(claimant), node,
                               assigned)
    except (errors.TLError, TypeError, ValueError):
        raise RemoteError("bad-answer", "device") from None


class RemoteStore:
    """Store's read methods over a QueryClient (see the module)."""

    def __init__(self, client: QueryClient) -> None:
        self.q = client
        self._certs: OrderedDict[int, list[Any] | None] = OrderedDict()

    def close(self) -> None:
        self.q.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def genesis(self, pinned: Genesis | None = None) -> Genesis:
        """The domain's genesis as its gateway states it; with `pinned` (the
        caller's own copy), that one, once the gateway states the same
        (RemoteError genesis-mismatch otherwise: `pin`)."""
        raw, _ = self.q.ask("genesis")
        try:
            stated = from_dict(tomllib.loads(raw.decode()))
        except (AttributeError, UnicodeDecodeError, tomllib.TOMLDecodeError, GenesisError) as e:
            raise RemoteError("bad-answer", "genesis: %s" % e) from None
        return pin(stated, pinned, "the gateway")

    def _with_cert(self, got: Any) -> BlockRecord | None:
        if got is None:
            return None
        b = _block(got[0])
        if got[1] is not None or b.height not in self._certs:
            self._certs[b.height] = got[1]
        while len(self._certs) > CACHED:
            self._certs.popitem(last=False)
        return b

    def head(self) -> BlockRecord | None:
        return self._with_cert(self.q.ask("head")[0])

    def get_block(self, height: int) -> BlockRecord | None:
        return self._with_cert(self.q.ask("block", height)[0])

    def certificate(self, height: int) -> list[Any] | None:
        if self._certs.get(height) is None:  # unknown, or not final when last asked
            self.get_block(height)
        return self._certs.get(height)

    def _proof(self, op: str, arg: bytes) -> tuple[BlockRecord, bytes | None, list] | None:
        got, _ = self.q.ask(op, arg)
        if got is None:
            return None
        return self._with_cert([got[0], None]), got[1], got[2]

    def prove_kv(self, key: bytes) -> tuple[BlockRecord, bytes | None, list] | None:
        return self._proof("prove_kv", key)

    def prove_account(self, device_id: bytes) -> tuple[BlockRecord, bytes | None, list] | None:
        return self._proof("prove_account", device_id)

    def get_receipt(self, tx_id: bytes) -> bytes | None:
        return self.q.ask("receipt", tx_id)[0]

    def validator_sets(self) -> list[list[Any]]:
        return self.q.ask("valsets")[0]

    def _pages(self, op: str, arg: Any, cursor: Any, size: int = cq.MAX_PAGE) -> Iterator[Any]:
        after = None
        for _ in range(MAX_ITEMS // size + 1):
            items, more = self.q.ask(op, arg, size, after)
            yield from items
            if not more or not items:
                return
            after = cursor(items[-1])

    def kv_range(self, prefix: bytes, limit: int = 1000) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for k, v in self._pages("kv_range", prefix, lambda it: it[0],
                                max(1, min(limit, cq.MAX_PAGE))):
            out.append((k, v))
            if len(out) >= limit:
                break
        return out

    def txs_of_type(self, type_: int, since_height: int = 0) -> Iterator[TxRecord]:
        # the cursor is exclusive: start after every tx of the height before
        after = None if since_height <= 0 else [since_height - 1, 1 << 31]
        while True:
            items, more = self.q.ask("txs", type_, cq.MAX_PAGE, after)
            for r in items:
                yield TxRecord(*r)
            if not more or not items:
                return
            after = items[-1][1:3]

    def device(self, device_id: bytes) -> DeviceRecord | None:
        """One principal: a page of one from just before its id."""
        n = int.from_bytes(device_id, "big")
        after = (n - 1).to_bytes(len(device_id), "big") if n else None
        items, _ = self.q.ask("devices", None, 1, after)
        if not items:
            return None
        i, rec = _device(items[0])
        return rec if i == device_id else None

    def devices(self) -> list[tuple[bytes, DeviceRecord]]:
        return [_device(leaf) for leaf in self._pages("devices", None, lambda it: cbor.loads(it)[0])]
