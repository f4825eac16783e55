"""The derived readings of a replicated domain's market operator
(docs/CONSENSUS.md, "Derived services"): each reading of a derived stream
(edge analytics, gateway/market/node/analytics.py) is claimed in the cluster
before anyone sees it, so no index is ever published with two values, also
across a change of issuer.

One key per open derived agreement in the operator's key-value bucket
(`TL_OP_<domain>`, beside the lease): `derived.<agreement hex>`, whose value
is the stream's tail, canonical CBOR `{1: first index, 2: its batch number,
3: [the signed readings first, first+1, ...]}`: every reading made and not
yet committed on the chain as its writer held it. The issuer writes the tail
with the new reading by compare-and-set on the entry's revision, and
publishes the reading only once that write is acknowledged. A gateway that
takes the lease over reads the tail first and sends its readings again with
their bytes (the RFC 6979 signature makes a reading's bytes a function of
its value), deriving only the indices after it. Two gateways that both
believe they issue cannot both claim an index: the second write fails
(wrong-last-seq) and that gateway reads the tail again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors

from gateway.errors import ClusterError
from shared import cbor, errors

KEY_PREFIX = "derived."
MAX_TAIL = 64  # readings a tail holds at most: the chain is that far behind the stream
K_FIRST, K_BATCH, K_READINGS = 1, 2, 3


def key(aid: bytes) -> str:
    return KEY_PREFIX + aid.hex()


@dataclass(frozen=True)
class Tail:
    """The readings claimed past those committed (as the writer's chain held
    it); revision 0: none was ever claimed."""

    first: int
    batch: int
    readings: list[bytes]
    revision: int

    def encode(self) -> bytes:
        return cbor.dumps({K_FIRST: self.first, K_BATCH: self.batch,
                           K_READINGS: self.readings})

    @classmethod
    def decode(cls, data: bytes, revision: int) -> Tail:
        """ClusterError(garbage) unless a tail's structure."""
        try:
            m = cbor.loads(bytes(data), max_size=len(data) + 1)
        except errors.TLError as e:
            raise ClusterError(ClusterError.GARBAGE, f"derived tail: {e.reason}") from None
        if not isinstance(m, dict) or set(m) != {K_FIRST, K_BATCH, K_READINGS} \
                or not all(isinstance(m[k], int) and not isinstance(m[k], bool)
                           and m[k] >= 0 for k in (K_FIRST, K_BATCH)) \
                or not isinstance(m[K_READINGS], list) \
                or not all(isinstance(r, bytes) for r in m[K_READINGS]):
            raise ClusterError(ClusterError.GARBAGE, "derived tail: want {1: first, 2: batch, "
                                                     "3: [readings]}")
        return cls(m[K_FIRST], m[K_BATCH], m[K_READINGS], revision)


class DerivedTails:
    """The tails in the operator's bucket. `kv`: a callable giving the
    bucket (the lease's, once it exists)."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    async def read(self, aid: bytes) -> Tail:
        try:
            e = await self.kv().get(key(aid))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return Tail(0, 0, [], 0)
        if not e.value:
            return Tail(0, 0, [], int(e.revision))
        return Tail.decode(bytes(e.value), int(e.revision))

    async def write(self, aid: bytes, first: int, batch: int, readings: list[bytes],
                    last: int) -> int:
        """Claim `readings` (the tail with the new reading last) over
        revision `last` (0: the key is new); the new revision.
        ClusterError(wrong-last-seq): another gateway wrote since;
        (too-large): the chain lags MAX_TAIL readings behind."""
        if len(readings) > MAX_TAIL:
            raise ClusterError(ClusterError.TOO_LARGE, f"derived tail of {len(readings)} "
                                                       f"readings (at most {MAX_TAIL})")
        value = Tail(first, batch, readings, 0).encode()
        try:
            if last:
                return int(await self.kv().update(key(aid), value, last=last))
            return int(await self.kv().create(key(aid), value))
        except nats.js.errors.KeyWrongLastSequenceError:  # (create: the key exists)
            raise ClusterError(ClusterError.WRONG_LAST_SEQ, "derived tail " + aid.hex()[:8]
                               + ": written by another gateway") from None

    async def forget(self, aid: bytes) -> None:
        """The agreement closed: its tail is not needed any more."""
        try:
            await self.kv().purge(key(aid))
        except nats.errors.Error:
            pass  # a leftover key of a closed agreement is never read again
