"""The derived readings' claims (gateway/cluster/derived.py) in the operator's
bucket of a real NATS server: a tail written by compare-and-set, read back
as written; a writer that has not read the last write is refused
(wrong-last-seq) and claims nothing, so one index never holds two values;
a garbage entry is refused with a reason code; an oversized tail is refused
before it is sent; a purged tail reads as none and is created again."""

from __future__ import annotations

import pytest

from gateway.cluster import link
from gateway.cluster.derived import MAX_TAIL, DerivedTails, Tail, key
from gateway.cluster.issuer import IssuerLease
from gateway.errors import ClusterError
from tests.support.nats import run

DOMAIN = "tails-test"
AID = b"\x42" * 16


def test_claims_by_compare_and_set(nats_server):
    async def body():
        nc = await link.connect(nats_server.urls)
        try:
            lease = IssuerLease(nc.jetstream(), DOMAIN, "gw1", replicas=1)
            await lease.ensure()
            a, b = DerivedTails(lambda: lease.kv), DerivedTails(lambda: lease.kv)
            none = await a.read(AID)
            assert (none.readings, none.revision) == ([], 0)
            r1 = await a.write(AID, 4, 1, [b"r4"], 0)
            seen = await b.read(AID)  # the other gateway reads it: the same tail
            assert (seen.first, seen.batch, seen.readings, seen.revision) == (4, 1, [b"r4"], r1)
            r2 = await a.write(AID, 4, 1, [b"r4", b"r5"], r1)
            # b claims index 5 over what it read before a's second write: refused
            with pytest.raises(ClusterError) as e:
                await b.write(AID, 4, 1, [b"r4", b"other r5"], r1)
            assert e.value.reason == ClusterError.WRONG_LAST_SEQ
            with pytest.raises(ClusterError) as e:  # a second create of the key
                await b.write(AID, 4, 1, [b"r4"], 0)
            assert e.value.reason == ClusterError.WRONG_LAST_SEQ
            now = await b.read(AID)
            assert (now.readings, now.revision) == ([b"r4", b"r5"], r2)  # a's, unchanged
            with pytest.raises(ClusterError) as e:
                await a.write(AID, 0, 0, [b"x"] * (MAX_TAIL + 1), r2)
            assert e.value.reason == ClusterError.TOO_LARGE
            await lease.kv.put(key(AID), b"\xff garbage")
            with pytest.raises(ClusterError) as e:
                await a.read(AID)
            assert e.value.reason == ClusterError.GARBAGE
            await a.forget(AID)
            gone = await b.read(AID)
            assert (gone.readings, gone.revision) == ([], 0)
            assert await b.write(AID, 8, 2, [b"r8"], 0) > 0  # created again
        finally:
            await nc.close()
    run(body, 60)


@pytest.mark.parametrize("raw", [b"", b"\xa0", b"\xa3\x01\x00\x02\x00\x03\x80\x00",
                                 b"\xa3\x01\x20\x02\x00\x03\x80", b"\xa3\x01\x00\x02\x00\x03\x81\x01"])
def test_garbage_tails_refused(raw: bytes) -> None:
    with pytest.raises(ClusterError) as e:
        Tail.decode(raw, 1)
    assert e.value.reason == ClusterError.GARBAGE


def test_tail_round_trip() -> None:
    t = Tail(3, 1, [b"a", b"bc"], 0)
    assert Tail.decode(t.encode(), 7) == Tail(3, 1, [b"a", b"bc"], 7)
