"""The signature side channel of a domain: gateways publish (height, header
hash, signer, signature) on the core NATS subject tlc.<domain>.sigs, and each
gateway's Collector gathers k valid signatures of one header into a certificate.

What a signature means is the consensus core's: it injects `verify(height,
hash, signer, signature) -> bool` and `is_member(height, signer) -> bool` (the
validator set in force at that height). The collector refuses, with a reason
code and no change: garbage, a signer outside the set, a bad signature, a
signature for a height already final (a replay cannot finalise a new block).
One signer signing two different hashes at one height is equivocation: both
signed messages are handed to `on_evidence` and the second does not count.

The threshold k may differ per height (a validator-set change, VALSET):
`k(height)` gives it, or None while the set of that height is not known yet
(a gateway behind the others receives votes on blocks it has not applied, and
a change scheduled by one of those blocks is not in its state). Such votes are
kept aside, unchecked (at most MAX_KEPT per height), and judged by `revisit()`
once the caller knows that height's set.

Core NATS delivers at most once: a gateway publishes its signature again
(`SigChannel.publish`, same bytes) while its block is not final, and a
collector counts each signer once. A signature for a height this gateway
already holds final is handed to `on_stale`: it comes from a gateway that
applied the block late (restarted, or far behind) and now waits for the
others' votes, which they stopped resending when the block became final."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg

from gateway.cluster import link
from gateway.errors import ClusterError
from shared import cbor
from shared.errors import TLError

log = logging.getLogger("thingledger.cluster")

MAX_SIG_MESSAGE = 512  # bytes of one signature message
HASH_LEN = 32
MAX_SIGNER = 33  # a device id (16) or a public key (33)
MAX_SIGNATURE = 128
MAX_AHEAD = 64  # heights above the last final one a collector keeps signatures for
MAX_KEPT = 256  # signatures kept aside per height whose set is not known yet

K_HEIGHT, K_HASH, K_SIGNER, K_SIG = 1, 2, 3, 4


@dataclass(frozen=True)
class HeaderSig:
    height: int
    hash: bytes
    signer: bytes
    signature: bytes

    def encode(self) -> bytes:
        return cbor.dumps({K_HEIGHT: self.height, K_HASH: self.hash, K_SIGNER: self.signer,
                           K_SIG: self.signature})

    @classmethod
    def decode(cls, data: bytes) -> HeaderSig:
        """ClusterError(garbage / too-large) unless a canonical signature message."""
        if len(data) > MAX_SIG_MESSAGE:
            raise ClusterError(ClusterError.TOO_LARGE, f"{len(data)} bytes")
        try:
            m = cbor.loads(bytes(data), max_size=MAX_SIG_MESSAGE)
        except TLError as e:
            raise ClusterError(ClusterError.GARBAGE, f"not canonical CBOR ({e.reason})") from None
        if not isinstance(m, dict) or sorted(m) != [K_HEIGHT, K_HASH, K_SIGNER, K_SIG]:
            raise ClusterError(ClusterError.GARBAGE, "want the map {1: height, 2: hash, "
                                                     "3: signer, 4: signature}")
        h, hh, who, sig = m[K_HEIGHT], m[K_HASH], m[K_SIGNER], m[K_SIG]
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ClusterError(ClusterError.GARBAGE, "height")
        if not isinstance(hh, bytes) or len(hh) != HASH_LEN:
            raise ClusterError(ClusterError.GARBAGE, "header hash")
        if not isinstance(who, bytes) or not 0 < len(who) <= MAX_SIGNER:
            raise ClusterError(ClusterError.GARBAGE, "signer")
        if not isinstance(sig, bytes) or not 0 < len(sig) <= MAX_SIGNATURE:
            raise ClusterError(ClusterError.GARBAGE, "signature")
        return cls(h, hh, who, sig)


@dataclass(frozen=True)
class Certificate:
    """k signatures of one header, by distinct signers, sorted by signer."""

    height: int
    hash: bytes
    sigs: tuple[tuple[bytes, bytes], ...]


@dataclass
class _Height:
    by_hash: dict[bytes, dict[bytes, HeaderSig]] = field(default_factory=dict)
    signed: dict[bytes, HeaderSig] = field(default_factory=dict)  # signer -> its first


class Collector:
    """Gathers signatures until k of one header's are valid (no I/O: feed it)."""

    def __init__(self, k: int | Callable[[int], int | None],
                 verify: Callable[[int, bytes, bytes, bytes], bool],
                 is_member: Callable[[int, bytes], bool],
                 on_final: Callable[[Certificate], None] | None = None,
                 on_evidence: Callable[[HeaderSig, HeaderSig], None] | None = None,
                 final_height: int = 0, max_ahead: int = MAX_AHEAD) -> None:
        if isinstance(k, int):
            if k < 1:
                raise ValueError("k: at least one signature")
            self.k: Callable[[int], int | None] = lambda height: k
        else:
            self.k = k
        self.verify = verify
        self.is_member = is_member
        self.on_final = on_final
        self.on_evidence = on_evidence
        self.final_height = final_height
        self.max_ahead = max_ahead
        self.final: dict[int, Certificate] = {}
        self._open: dict[int, _Height] = {}
        self._later: dict[int, dict[tuple[bytes, bytes], HeaderSig]] = {}

    def add(self, s: HeaderSig) -> Certificate | None:
        """Count one signature; the certificate when it is the k-th of its header.
        ClusterError: stale, garbage (too far ahead), not-in-set, bad-signature,
        equivocation (after on_evidence). A signature of a height whose set is
        not known yet is kept for revisit()."""
        if s.height <= self.final_height:
            raise ClusterError(ClusterError.STALE, f"height {s.height} is final")
        if s.height > self.final_height + self.max_ahead:
            raise ClusterError(ClusterError.GARBAGE, f"height {s.height} too far ahead")
        k = self.k(s.height)
        if k is None:
            kept = self._later.setdefault(s.height, {})
            if len(kept) >= MAX_KEPT:
                raise ClusterError(ClusterError.TOO_LARGE, f"{MAX_KEPT} kept at {s.height}")
            kept.setdefault((s.signer, s.hash), s)
            return None
        if not self.is_member(s.height, s.signer):
            raise ClusterError(ClusterError.NOT_IN_SET, s.signer.hex())
        if not self.verify(s.height, s.hash, s.signer, s.signature):
            raise ClusterError(ClusterError.BAD_SIGNATURE, s.signer.hex())
        h = self._open.setdefault(s.height, _Height())
        first = h.signed.get(s.signer)
        if first is not None:
            if first.hash == s.hash:
                return None  # a resend: counted once
            if self.on_evidence is not None:
                self.on_evidence(first, s)
            raise ClusterError(ClusterError.EQUIVOCATION,
                               f"{s.signer.hex()} at height {s.height}")
        h.signed[s.signer] = s
        sigs = h.by_hash.setdefault(s.hash, {})
        sigs[s.signer] = s
        if len(sigs) < k:
            return None
        cert = Certificate(s.height, s.hash,
                           tuple(sorted((w, x.signature) for w, x in sigs.items()))[:k])
        self.finalised(cert)
        return cert

    def revisit(self) -> Counter[str]:
        """Count the signatures kept aside whose height's set is known now (the
        caller applied a block); the refusals among them, by reason."""
        refused: Counter[str] = Counter()
        for height in sorted(self._later):
            if height > self.final_height and self.k(height) is None:
                continue
            for s in self._later.pop(height, {}).values():
                try:
                    self.add(s)
                except TLError as e:
                    refused[e.reason] += 1
        return refused

    def finalised(self, cert: Certificate) -> None:
        """Record a final height (also one learnt elsewhere, e.g. from a block)."""
        self.final[cert.height] = cert
        if cert.height > self.final_height:
            self.final_height = cert.height
        for height in [x for x in self._open if x <= self.final_height]:
            del self._open[height]
        for height in [x for x in self._later if x <= self.final_height]:
            del self._later[height]
        for height in [x for x in self.final if x <= self.final_height - self.max_ahead]:
            del self.final[height]
        if self.on_final is not None:
            self.on_final(cert)


class SigChannel:
    """Publishes this gateway's signatures and feeds every one received to a Collector;
    refusals are counted by reason (`refused`) and logged, never raised."""

    def __init__(self, nc: Client, domain: str, collector: Collector,
                 on_stale: Callable[[HeaderSig], None] | None = None) -> None:
        self.nc = nc
        self.on_stale = on_stale
        self.subject = link.sig_subject(domain)
        self.collector = collector
        self.refused: Counter[str] = Counter()
        self.received = 0
        self.changed = asyncio.Event()  # set after each message handled
        self._sub = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_msg)
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, sig: HeaderSig) -> None:
        await self.nc.publish(self.subject, sig.encode())

    async def _on_msg(self, msg: Msg) -> None:
        self.received += 1
        sig = None
        try:
            sig = HeaderSig.decode(msg.data)
            self.collector.add(sig)
        except TLError as e:
            self.refused[e.reason] += 1
            log.info("signature refused: %s", e)
            if e.reason == ClusterError.STALE and sig is not None and self.on_stale is not None:
                self.on_stale(sig)
        self.changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until predicate() holds, checked after each message handled."""
        async def until() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(until(), timeout)
