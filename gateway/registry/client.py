"""Talking to registry nodes over MQTT without a copy of the chain
(docs/IDENTITY.md §1, "Looking a device up").

    c = RegistryClient("mqtt://host:1883", genesis)   # genesis: RegistryGenesis
    c.submit(message) -> tx id          (RegistryError refused/<reason>)
    c.status(tx_id) -> dict             (height, confirmations, status, reason)
    found = c.lookup(device id | pubkey)  -> Lookup (record None: not found)
    c.close()

Requests go to tl/registry/req, which every node answers; the client waits
for the first reply and `settle_s` more for the others. A lookup checks
every answer itself with shared/regproof.py: the header chain from genesis
(or from the client's last verified checkpoint) must follow the linking,
time and retarget rules and carry its proof of work; the record's leaf must
be under the last header's state root. The answer with the most work wins,
so a lying node can withhold a record but not forge one, and one that hands
out a lighter chain loses to an honest one.

`RemoteRegistry(url, genesis, confirmations=N)` is the domain gateway's
claim check (gateway/registry/view.registry_lookup with a URL): lookup(pubkey)
returns a RegistryRecord once it is N blocks deep on the heaviest chain
the client could verify, None otherwise; RegistryError when no node answers.
"""

from __future__ import annotations

import os
import queue
import threading
import time as _time
from dataclasses import dataclass
from typing import Any

from gateway.errors import RegistryError
from gateway.registry import chain, wire
from gateway.registry.params import RegistryGenesis
from shared import cbor, errors, regproof
from shared import tx as txm

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_SETTLE_S = 0.3
UNAVAILABLE = "registry-unavailable"


@dataclass
class Lookup:
    """A light lookup's verified answer."""

    record: chain.RegistryRecord | None
    height: int  # head of the heaviest verified chain
    head_hash: bytes
    work: int
    headers: int  # headers checked for this answer
    confirmations: int  # head height - record height + 1 (0 without record)
    node: str
    proof_bytes: int  # leaf + audit path of the record


def genesis_tip(g: RegistryGenesis) -> regproof.Tip:
    return regproof.genesis_tip(cbor.dumps(chain.genesis_fields(g.time, g.target)))


def check_answer(g: RegistryGenesis, tip: regproof.Tip | tuple[int, bytes], m: dict[str, Any],
                 key: bytes, now: int | None = None
                 ) -> tuple[regproof.Tip, chain.RegistryRecord | None, int]:
    """Check a lookup reply against the verified `tip` it was asked from, or
    a trusted checkpoint (height, hash) whose header and the retarget
    window before it the reply carries: (new tip, record or None, proof
    bytes). Raises ProofError."""
    headers = m.get("headers")
    if not isinstance(headers, list) or not all(isinstance(h, bytes) for h in headers):
        raise errors.ProofError("bad-reply")
    from gateway.registry.replay import MAX_FUTURE_S

    if isinstance(tip, tuple):
        since = m.get("since")
        if not isinstance(since, int):
            raise errors.ProofError("bad-reply")
        tip, headers = regproof.checkpoint_tip(headers, since + 1, tip[0], tip[1],
                                               g.retarget_blocks)

    new = regproof.check_headers(tip, headers, g.retarget_blocks, g.block_time_ms, g.target,
                                 now, MAX_FUTURE_S if now is not None else None)
    rec = m.get("record")
    if rec is None:
        return new, None, 0
    did = key if len(key) == txm.ID_LEN else txm.device_id(key)
    if not isinstance(rec, list) or len(rec) != 4:
        raise errors.ProofError("bad-reply")
    v = regproof.check_record(new, *rec, device_id=did)
    if len(key) != txm.ID_LEN and v[2] != key:
        raise errors.ProofError("other-device")
    name = ""
    mk = m.get("maker")
    if isinstance(mk, list) and len(mk) == 4:
        name = regproof.check_maker(new, *mk, mfr_id=v[3])[3]
    size = len(rec[0]) + 32 * len(rec[3]) if isinstance(rec[3], list) else 0
    return new, chain.RegistryRecord(v[1], v[2], v[3], name, v[4], v[5], v[6], v[7], v[8],
                                     v[9]), size


class RegistryClient:
    def __init__(self, url: str, genesis: RegistryGenesis, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, settle_s: float = DEFAULT_SETTLE_S) -> None:
        self.genesis = genesis
        self.digest = genesis.digest()
        self.timeout_s = timeout_s
        self.settle_s = settle_s
        self.id = "c" + os.urandom(6).hex()
        self._lock = threading.Lock()
        self.link = wire.Link(url, "tl-registry-" + self.id, [wire.rsp_topic(self.id)])
        self.link.start()
        self.tip = genesis_tip(genesis)  # the last verified header (a checkpoint)

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, op: str, fields: dict[str, Any], *, node: str | None = None,
                all_: bool = True) -> list[dict[str, Any]]:
        """Send a request; the replies (first + those within settle_s, or only
        the first unless `all_`). RegistryError registry-unavailable if none."""
        with self._lock:
            if not self.link.connected.wait(self.timeout_s):
                raise RegistryError(UNAVAILABLE, "no broker at %s:%d" % (self.link.host,
                                                                        self.link.port))
            rid = os.urandom(8)
            msg = dict(fields, op=op, id=rid, reply=wire.rsp_topic(self.id),
                       genesis=self.digest, node=self.id)
            self.link.publish(wire.req_topic(node) if node else wire.TOPIC_REQ, cbor.dumps(msg))
            out: list[dict[str, Any]] = []
            deadline = _time.monotonic() + self.timeout_s
            while True:
                left = deadline - _time.monotonic()
                if left <= 0:
                    break
                try:
                    topic, payload = self.link.inbox.get(timeout=left)
                except queue.Empty:
                    break
                if not topic:
                    continue
                try:
                    m = wire.decode(payload, wire.MAX_REPLY)
                except RegistryError:
                    continue
                if m.get("id") != rid or m.get("genesis") != self.digest:
                    continue
                out.append(m)
                if not all_:
                    break
                if len(out) == 1:
                    deadline = _time.monotonic() + self.settle_s
            if not out:
                raise RegistryError(UNAVAILABLE, "no registry node answered in %g s"
                                    % self.timeout_s)
            return out

    def submit(self, message: bytes) -> bytes:
        replies = self.request("submit", {"tx": bytes(message)})
        ok = [m for m in replies if isinstance(m.get("tx"), bytes)]
        if ok:
            return ok[0]["tx"]
        m = replies[0]
        raise RegistryError("refused/" + str(m.get("refused")), str(m.get("detail", "")))

    def status(self, tx_id: bytes) -> dict[str, Any]:
        """The reply of the node that sees the tx deepest."""
        replies = self.request("status", {"tx": tx_id})
        return max(replies, key=lambda m: m.get("confirmations") or 0)

    def lookup(self, key: bytes, *, from_genesis: bool = False,
               checkpoint: tuple[int, bytes] | None = None) -> Lookup:
        """The record of a device id or public key, checked (see the module
        doc): from the last verified header (from genesis the first time),
        or from a `checkpoint` (height, block hash) the caller trusts."""
        start: regproof.Tip | tuple[int, bytes]
        if checkpoint is not None and checkpoint[0] <= self.genesis.retarget_blocks:
            checkpoint, from_genesis = None, True  # that close to genesis: check it all
        if checkpoint is not None:
            start = checkpoint
            since = max(0, checkpoint[0] - self.genesis.retarget_blocks - 1)
        else:
            start = genesis_tip(self.genesis) if from_genesis else self.tip
            since = start.height
        replies = self.request("lookup", {"key": bytes(key), "since": since})
        best: tuple[regproof.Tip, chain.RegistryRecord | None, int, str, int] | None = None
        errs: list[str] = []
        now = int(_time.time())
        for m in replies:
            if m.get("since") != since:
                continue
            try:
                tip, rec, size = check_answer(self.genesis, start, m, key, now)
            except errors.TLError as e:
                if checkpoint is None and since and e.detail == "bad-link":
                    return self.lookup(key, from_genesis=True)  # our tip left their chain
                errs.append("%s: %s" % (m.get("node"), e.detail or e.reason))
                continue
            n = len(m["headers"])
            if best is None or tip.work > best[0].work or (
                    tip.work == best[0].work and tip.hash < best[0].hash):
                best = (tip, rec, size, str(m.get("node")), n)
        if best is None:
            raise RegistryError("bad-proof", "; ".join(errs) or "no usable answer")
        tip, rec, size, node, n = best
        if checkpoint is None and tip.work >= self.tip.work:
            self.tip = tip
        conf = tip.height - rec.height + 1 if rec is not None else 0
        return Lookup(rec, tip.height, tip.hash, tip.work, n, conf, node, size)


class RemoteRegistry:
    """The claim check's registry lookup over MQTT (see the module doc)."""

    def __init__(self, url: str, genesis: RegistryGenesis, confirmations: int = 1,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.confirmations = confirmations
        self.client = RegistryClient(url, genesis, timeout_s=timeout_s)

    def lookup(self, device_pubkey: bytes) -> chain.RegistryRecord | None:
        found = self.client.lookup(bytes(device_pubkey))
        if found.record is None or found.confirmations < self.confirmations:
            return None
        return found.record

    def close(self) -> None:
        self.client.close()
