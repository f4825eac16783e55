"""A long-running registry node: `thingledger registry serve` (docs/IDENTITY.md §1).

    node = RegistryNode(data_dir, "mqtt://127.0.0.1:1883", mine=True, log=print)
    node.run(stop_event)        # until stop_event is set

One thread does the work (SQLite is used from it only); paho's network
thread only queues messages. On every (re)connection the node asks all
nodes for their head, announces its own head block and republishes its
pending transactions; a peer with more work (or an announced block whose
parent is unknown) is asked for the blocks after the node's locator, in
batches, until nothing more follows. Blocks it mines are announced on
tl/registry/blocks. Everything received is validated (gateway/registry/
forks.py, chain.py); a refusal is logged with its reason and the node goes
on. Log lines (stdout) the tests and the demo wait for:

    node <id> genesis <hash> height <h>
    connected
    head <h> <hash> work <w>
    reorg depth <d>, <n> txs back to the mempool
    mined <h> <hash> txs <n>
    tx <id> accepted
    refused block <hash> from <node>: <reason> (<detail>)
    refused message on <topic>: <reason> (<detail>)
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time as _time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.errors import BlockRefused, RegistryError
from gateway.registry import chain, wire
from gateway.registry import pow as pw
from gateway.registry.core import open_registry
from gateway.registry.forks import (
    REORG_WINDOW,
    BlockTree,
    NetBlock,
    Received,
    decode_block,
    make_block,
)
from gateway.registry.replay import MAX_FUTURE_S
from shared import cbor, errors
from shared import tx as txm

BATCH_BLOCKS = 500
BATCH_BYTES = 4 * 1024 * 1024
MINE_CHUNK = 20_000  # nonces tried between two looks at the inbox
SYNC_TIMEOUT_S = 5.0
IDLE_S = 0.05
EXTERNAL_CHECK_S = 1.0
MAX_PEERS = 1000  # peers asked for blocks at once
DRAIN_MAX = 200  # messages handled between two mining chunks
HEAD_POLL_S = 30.0  # ask the peers' heads again (a missed announcement heals)
NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class RegistryNode:
    def __init__(self, data_dir: Path | str, broker_url: str, *, mine: bool = False,
                 miner: bytes = chain.ANONYMOUS_MINER, node_id: str | None = None,
                 log: Callable[[str], None] = print, clock: Callable[[], float] = _time.time,
                 max_drift_s: int = MAX_FUTURE_S, reorg_window: int = REORG_WINDOW) -> None:
        if node_id is not None and not NODE_ID.fullmatch(node_id):
            raise ValueError("node id: 1-32 letters, digits, '-' or '_', not %r" % node_id)
        self.reg = open_registry(data_dir)
        self.tree = BlockTree(self.reg, clock=clock, max_drift_s=max_drift_s,
                              reorg_window=reorg_window)
        self.genesis = self.reg.genesis.digest()
        self.id = node_id or os.urandom(6).hex()
        self.mine = mine
        self.miner = miner
        self.log = log
        self.clock = clock
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.link = wire.Link(broker_url, "tl-registry-" + self.id,
                              [wire.TOPIC_BLOCKS, wire.TOPIC_TX, wire.TOPIC_REQ,
                               wire.req_topic(self.id), wire.rsp_topic(self.id)], self.inbox)
        self._syncing: dict[str, float] = {}  # peer -> when we asked it for blocks
        self._job: tuple[dict[str, Any], chain.Executed, int] | None = None
        self._last_external = 0.0
        self._last_poll = _time.monotonic()
        self._relayed: set[bytes] = set()  # pending txs published on tl/registry/tx

    # ---- running -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.log("node %s genesis %s height %d" % (self.id, self.tree.main[0].hex(),
                                                   self.tree.height))
        self._log_head()
        self.link.start()
        try:
            while not stop.is_set():
                try:
                    busy = self.mine and self._mine_step()
                except RegistryError as e:  # another process wrote to the folder meanwhile
                    self.log("mining: %s (%s); re-reading the chain" % (e.reason, e.detail))
                    self._job = None
                    self.tree.load()
                    busy = False
                # what came in meanwhile (up to a bound) before the next nonces
                try:
                    item: tuple[str, bytes] | None = self.inbox.get(timeout=0 if busy else IDLE_S)
                except queue.Empty:
                    item = None
                n = 0
                while item is not None and n < DRAIN_MAX:
                    self.handle(*item)
                    n += 1
                    try:
                        item = self.inbox.get_nowait()
                    except queue.Empty:
                        item = None
                if item is not None:
                    self.handle(*item)
                self._check_external()
        finally:
            self.link.close()
            self.reg.close()

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            if topic == "":
                self._on_link(payload)
            elif topic == wire.TOPIC_BLOCKS:
                self._on_block(payload)
            elif topic == wire.TOPIC_TX:
                self._on_tx(payload)
            elif topic in (wire.TOPIC_REQ, wire.req_topic(self.id)):
                self._on_request(payload)
            elif topic == wire.rsp_topic(self.id):
                self._on_reply(payload)
        except (RegistryError, errors.TLError) as e:
            self.log("refused message on %s: %s (%s)" % (topic, e.reason,
                                                         getattr(e, "detail", "")))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            # a field of the wrong type deep in a hostile message: the node goes on
            self.log("refused message on %s: %s (%s)" % (topic, wire.BAD_MESSAGE,
                                                         type(e).__name__))

    def _check_external(self) -> None:
        """Another process (registry mine on this folder) wrote blocks."""
        now = _time.monotonic()
        if now - self._last_external < EXTERNAL_CHECK_S:
            return
        self._last_external = now
        if self.link.connected.is_set() and now - self._last_poll >= HEAD_POLL_S:
            self._last_poll = now
            self._ask_heads()
        for tid, msg in self.reg.store.pending(self.reg.genesis.block_max_txs):
            if tid not in self._relayed:  # queued by another process (--no-mine)
                self._relay(tid, msg)
        head = self.reg.store.head()
        if head is not None and head.hash != self.tree.head_hash:
            self.tree.load()
            self._log_head()
            self._announce(self.tree.block(self.tree.head_hash))

    def _ask_heads(self) -> None:
        self._send(wire.TOPIC_REQ, {"op": "head", "id": b"", "reply": wire.rsp_topic(self.id)})

    def _log_head(self) -> None:
        self.log("head %d %s work %d" % (self.tree.height, self.tree.head_hash.hex(),
                                         self.tree.work))

    def _send(self, topic: str, msg: dict[str, Any]) -> None:
        msg["genesis"] = self.genesis
        msg["node"] = self.id
        self.link.publish(topic, cbor.dumps(msg))

    def _announce(self, blk: NetBlock | None) -> None:
        if blk is not None and blk.height > 0:
            self._send(wire.TOPIC_BLOCKS, {"from": self.id, "block": blk.encode()})

    def _on_link(self, what: bytes) -> None:
        self.log(what.decode())
        if what != b"connected":
            return
        self._syncing.clear()
        self._ask_heads()
        self._announce(self.tree.block(self.tree.head_hash))
        for tid, msg in self.reg.store.pending(self.reg.genesis.block_max_txs):
            self._relay(tid, msg)

    # ---- blocks --------------------------------------------------------------------

    def _take(self, blocks: list[NetBlock], peer: str, quiet_known: bool = False) -> Received:
        out = self.tree.receive(blocks)
        for b, e in out.refused:
            if not (quiet_known and e.reason == "known-block"):
                self.log("refused block %s from %s: %s (%s)" % (b.hash.hex(), peer, e.reason,
                                                                e.detail))
        if out.reorg_depth:
            self.log("reorg depth %d, %d txs back to the mempool" % (out.reorg_depth,
                                                                    out.returned))
        if out.switched:
            self._job = None
            self._log_head()
        if out.orphans and peer:
            self._ask_blocks(peer)
        return out

    def _on_block(self, payload: bytes) -> None:
        m = wire.decode(payload, wire.MAX_ANNOUNCE)
        peer = m.get("from")
        if peer == self.id:
            return
        if not isinstance(peer, str) or not NODE_ID.fullmatch(peer):
            raise RegistryError(wire.BAD_MESSAGE, "from")
        if m.get("genesis") != self.genesis:
            self.log("refused block from %s: genesis-mismatch (another registry)" % peer)
            return
        try:
            blk = decode_block(m.get("block", b""))
        except BlockRefused as e:
            self.log("refused block from %s: %s (%s)" % (peer, e.reason, e.detail))
            return
        self._take([blk], peer)

    def _ask_blocks(self, peer: str, after: bytes | None = None) -> None:
        """Ask `peer` for the blocks after our locator (or after `after`, the
        last block of its previous batch, which may be on a side branch)."""
        now = _time.monotonic()
        if now - self._syncing.get(peer, -SYNC_TIMEOUT_S) < SYNC_TIMEOUT_S:
            return
        if len(self._syncing) >= MAX_PEERS:  # names are free: keep the table bounded
            self._syncing = {p: t for p, t in self._syncing.items()
                             if now - t < SYNC_TIMEOUT_S}
            if len(self._syncing) >= MAX_PEERS:
                return
        self._syncing[peer] = now
        loc = self.tree.locator()
        if after is not None:
            loc = [after, *loc[:120]]
        self._send(wire.req_topic(peer), {"op": "blocks", "id": b"",
                                          "reply": wire.rsp_topic(self.id), "locator": loc})

    # ---- transactions ------------------------------------------------------------------

    def _on_tx(self, payload: bytes) -> None:
        tid = self._submit(bytes(payload))
        self._relayed.add(tid)  # every node on this broker has seen it

    def _relay(self, tid: bytes, msg: bytes) -> None:
        if len(self._relayed) > 4 * self.reg.mempool_capacity:
            self._relayed.clear()
        self._relayed.add(tid)
        self.link.publish(wire.TOPIC_TX, msg)

    def _submit(self, message: bytes) -> bytes:
        t = chain.check_stateless(message)
        if self.reg.is_pending(t.id) or self.reg.tx(t.id) is not None:
            return t.id
        tid = self.reg.submit(message)
        self.log("tx %s accepted" % tid.hex())
        return tid

    # ---- mining ----------------------------------------------------------------------

    def _mine_step(self) -> bool:
        """Try a chunk of nonces on the current block template; True while
        there is something to mine."""
        if self._job is None:
            made = self.tree.template(self.miner)
            if made is None:
                return False
            self._job = (made[0], made[1], 0)
        fields, ex, start = self._job
        found = pw.solve(fields, fields["target"], start=start, max_tries=MINE_CHUNK)
        if found is None:
            self._job = (fields, ex, start + MINE_CHUNK)
            return True
        self._job = None
        nonce, hb, _ = found
        blk = make_block(hb, [t.message for t in ex.txs])
        out = self._take([blk], "", quiet_known=True)
        if out.switched and self.tree.head_hash == blk.hash:
            self.log("mined %d %s txs %d" % (blk.height, blk.hash.hex(), len(blk.txs)))
            self._announce(blk)
        return True

    # ---- requests and replies ------------------------------------------------------------

    def _on_request(self, payload: bytes) -> None:
        m = wire.decode(payload, wire.MAX_REQUEST)
        op, reply, rid = m.get("op"), m.get("reply"), m.get("id", b"")
        if m.get("node") == self.id:
            return
        if op not in wire.OPS or not isinstance(reply, str) \
                or not reply.startswith(wire.RSP_PREFIX) or len(reply) > 200 \
                or "+" in reply or "#" in reply or not isinstance(rid, bytes) or len(rid) > 32:
            raise RegistryError(wire.BAD_MESSAGE, "request")
        if m.get("genesis") != self.genesis:
            raise RegistryError("genesis-mismatch", "request for another registry")
        out: dict[str, Any] = {"id": rid, "op": op}
        if op == "head":
            out.update(height=self.tree.height, hash=self.tree.head_hash,
                       work=wire.work_bytes(self.tree.work))
        elif op == "blocks":
            loc = m.get("locator")
            if not isinstance(loc, list) or len(loc) > 128 or not all(
                    isinstance(h, bytes) and len(h) == 32 for h in loc):
                raise RegistryError(wire.BAD_MESSAGE, "locator")
            out["blocks"], out["more"] = self.tree.blocks_after(loc, BATCH_BLOCKS, BATCH_BYTES)
        elif op == "submit":
            msg = m.get("tx")
            if not isinstance(msg, bytes):
                raise RegistryError(wire.BAD_MESSAGE, "tx")
            try:
                out["tx"] = self._submit(msg)
                self._relayed.add(out["tx"])  # every node on this broker has it
            except errors.TLError as e:
                out.update(refused=e.reason, detail=e.detail)
        elif op == "status":
            out.update(self._status(m.get("tx")))
        else:
            out.update(self._lookup(m.get("key"), m.get("since", 0)))
        self._send(reply, out)

    def _status(self, tid: object) -> dict[str, Any]:
        if not isinstance(tid, bytes) or len(tid) != 32:
            raise RegistryError(wire.BAD_MESSAGE, "tx")
        t = self.reg.tx(tid)
        if t is None:
            return {"height": None, "pending": self.reg.is_pending(tid), "confirmations": 0,
                    "status": None, "reason": ""}
        return {"height": t.height, "pending": False,
                "confirmations": self.tree.height - t.height + 1, "status": t.status,
                "reason": t.reason}

    def _lookup(self, key: object, since: object) -> dict[str, Any]:
        if not isinstance(key, bytes) or len(key) not in (txm.ID_LEN, 33):
            raise RegistryError(wire.BAD_MESSAGE, "key")
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise RegistryError(wire.BAD_MESSAGE, "since")
        did = key if len(key) == txm.ID_LEN else txm.device_id(key)
        since = min(since, self.tree.height)
        out: dict[str, Any] = {"headers": self.tree.headers_after(since), "since": since,
                               "record": None, "maker": None}
        p = self.reg.prove(did)
        if p is not None:
            out["record"] = [p.leaf, p.index, p.size, p.path]
            d = self.reg.state.device(did)
            assert d is not None
            q = self.reg.prove_manufacturer(d.manufacturer)
            if q is not None:
                out["maker"] = [q.leaf, q.index, q.size, q.path]
        return out

    def _on_reply(self, payload: bytes) -> None:
        m = wire.decode(payload, wire.MAX_REPLY)
        peer = m.get("node")
        if m.get("genesis") != self.genesis or not isinstance(peer, str) \
                or not NODE_ID.fullmatch(peer):
            return
        if m.get("op") == "head":
            h, w = m.get("hash"), wire.work_int(m.get("work"))
            if isinstance(h, bytes) and not self.tree.knows(h) and (
                    w > self.tree.work or (w == self.tree.work and h < self.tree.head_hash)):
                self._ask_blocks(peer)
        elif m.get("op") == "blocks":
            self._syncing.pop(peer, None)
            raw = m.get("blocks")
            if not isinstance(raw, list):
                raise RegistryError(wire.BAD_MESSAGE, "blocks")
            blocks = []
            for enc in raw:
                try:
                    blocks.append(decode_block(enc))
                except BlockRefused as e:
                    self.log("refused block from %s: %s (%s)" % (peer, e.reason, e.detail))
            before = self.tree.height
            out = self._take(blocks, "", quiet_known=True)
            if m.get("more") is True and blocks and (out.accepted or self.tree.height != before):
                self._ask_blocks(peer, blocks[-1].hash)
