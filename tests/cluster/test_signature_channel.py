"""The signature side channel (gateway/cluster/sigs.py) across a real 3-node NATS
cluster: three gateways, each on its own node, sign a header (ES256 by
shared/p256.py, checked with `cryptography` as the injected verification);
k = 2 of them make a certificate; a stranger's, a forged, a garbage and a
replayed signature are refused with their reason codes; equivocation is
recorded as evidence."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from gateway.cluster import link
from gateway.cluster.sigs import Certificate, Collector, HeaderSig, SigChannel
from gateway.errors import ClusterError
from shared import es256_cryptography, p256
from shared import tx as txm
from tests.support.nats import run

DOMAIN = "sig-test"


class Signer:
    def __init__(self, name: str) -> None:
        self.priv = hashlib.sha256(name.encode()).digest()
        self.pub = p256.public_key(self.priv)
        self.id = txm.device_id(self.pub)

    def sign(self, height: int, header_hash: bytes) -> HeaderSig:
        return HeaderSig(height, header_hash, self.id,
                         p256.sign(self.priv, message(height, header_hash)))


def message(height: int, header_hash: bytes) -> bytes:
    return b"test-header-sig" + height.to_bytes(8, "big") + header_hash


def test_collector_rules_without_network():
    gws = [Signer(f"gw{i}") for i in range(3)]
    keys = {g.id: g.pub for g in gws}
    evidence = []
    c = Collector(2, lambda h, hh, who, sig: es256_cryptography.verify(
                      keys[who], message(h, hh), sig),
                  lambda h, who: who in keys, on_evidence=lambda a, b: evidence.append((a, b)))
    h1 = hashlib.sha256(b"header 1").digest()
    assert c.add(gws[0].sign(1, h1)) is None
    assert c.add(gws[0].sign(1, h1)) is None  # a resend counts once
    cert = c.add(gws[1].sign(1, h1))
    assert isinstance(cert, Certificate) and cert.hash == h1 and len(cert.sigs) == 2
    assert c.final_height == 1
    with pytest.raises(ClusterError) as stale:
        c.add(gws[2].sign(1, h1))
    assert stale.value.reason == "stale"
    h2, h2b = hashlib.sha256(b"2").digest(), hashlib.sha256(b"2b").digest()
    c.add(gws[2].sign(2, h2))
    with pytest.raises(ClusterError) as eq:
        c.add(gws[2].sign(2, h2b))
    assert eq.value.reason == "equivocation" and evidence[0][0].hash == h2
    assert c.add(gws[0].sign(2, h2b)) is None  # the equivocator's second did not count
    with pytest.raises(ClusterError) as far:
        c.add(gws[0].sign(1000, h2))
    assert far.value.reason == "garbage"
    for bad in (b"", b"\xff", HeaderSig(1, b"short", b"x", b"y").encode(),
                b"\xa1\x01\x01"):
        with pytest.raises(ClusterError) as g:
            HeaderSig.decode(bad)
        assert g.value.reason == "garbage"
    with pytest.raises(ClusterError) as big:
        HeaderSig.decode(b"\x00" * 600)
    assert big.value.reason == "too-large"


def test_collector_takes_k_and_the_set_of_each_height():
    """A set change at height 3 (VALSET): gw0..gw2 with k = 2 up to height 2,
    gw0..gw3 with k = 3 from 3. Votes on a height whose set the caller does
    not know yet (None) are kept and judged once it does (revisit)."""
    gws = [Signer(f"gw{i}") for i in range(4)]
    keys = {g.id: g.pub for g in gws}
    known = [2]  # the highest height whose set the caller knows

    def k(h: int) -> int | None:
        return None if h > known[0] else (2 if h < 3 else 3)

    def member(h: int, who: bytes) -> bool:
        return who in keys and (h >= 3 or who != gws[3].id)

    c = Collector(k, lambda h, hh, who, sig: es256_cryptography.verify(
                      keys[who], message(h, hh), sig), member)
    hs = [hashlib.sha256(b"header %d" % i).digest() for i in range(5)]
    with pytest.raises(ClusterError) as out:  # gw3 is not in the set of height 2
        c.add(gws[3].sign(2, hs[2]))
    assert out.value.reason == "not-in-set"
    assert c.add(gws[0].sign(2, hs[2])) is None
    cert = c.add(gws[1].sign(2, hs[2]))
    assert cert is not None and len(cert.sigs) == 2  # k = 2 at height 2
    for g in gws[:3]:  # height 3's set is not known yet: kept, nothing final
        assert c.add(g.sign(3, hs[3])) is None
    assert c.final_height == 2 and not c.revisit()
    known[0] = 3
    assert not c.revisit()  # counted now: 3 votes of the new set, k = 3
    assert c.final_height == 3 and len(c.final[3].sigs) == 3
    assert gws[3].id not in {w for w, _ in c.final[3].sigs}
    stranger = Signer("not in any set")
    for g in (stranger, gws[0], gws[3]):  # kept: height 4's set is not known yet
        assert c.add(g.sign(4, hs[4])) is None
    known[0] = 4
    assert c.add(gws[2].sign(4, hs[4])) is None and c.final_height == 3  # 1 of k = 3
    assert c.revisit() == {"not-in-set": 1}  # the stranger's; gw0's and gw3's count
    assert c.final_height == 4
    assert {w for w, _ in c.final[4].sigs} == {gws[0].id, gws[2].id, gws[3].id}


async def routed(conns, chans: list[SigChannel], timeout: float = 10.0) -> None:
    """Wait until a message published on any node reaches every channel, then
    zero their counters. Core NATS drops what a node publishes while it does
    not know yet of another node's subscription (that interest spreads over
    the routes after the subscribe); the gateways resend their votes, this
    test's channels send each message once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for nc in conns:
        while True:
            seen = [ch.received for ch in chans]
            await nc.publish(chans[0].subject, b"\x00probe")
            await nc.flush()

            async def reached(seen=seen) -> None:
                while any(ch.received <= n for ch, n in zip(chans, seen, strict=True)):
                    await asyncio.sleep(0.01)
            try:
                await asyncio.wait_for(reached(), 0.5)
                break
            except TimeoutError:
                assert loop.time() < deadline, "the subject never routed to every node"
    for ch in chans:
        ch.refused.clear()
        ch.received = 0


def test_quorum_certificate_over_the_cluster(nats_cluster):
    gws = [Signer(f"gw{i}") for i in range(3)]
    keys = {g.id: g.pub for g in gws}
    stranger = Signer("not in the set")
    header = hashlib.sha256(b"block 1 header").digest()

    def verify(h, hh, who, sig):
        return es256_cryptography.verify(keys[who], message(h, hh), sig)

    async def body():
        conns = [await link.connect([url]) for url in nats_cluster.urls]
        finals: list[list[Certificate]] = [[] for _ in gws]
        chans = [SigChannel(nc, DOMAIN, Collector(2, verify, lambda h, who: who in keys,
                                                  on_final=finals[i].append))
                 for i, nc in enumerate(conns)]
        try:
            for ch in chans:
                await ch.start()
            await routed(conns, chans)
            await chans[2].publish(stranger.sign(1, header))
            forged = gws[1].sign(1, header)
            forged = HeaderSig(1, header, forged.signer, bytes(64))
            await chans[2].publish(forged)
            await conns[2].publish(chans[2].subject, b"\x00garbage")
            await chans[0].wait(lambda: sum(chans[0].refused.values()) == 3, 10)
            assert chans[0].refused == {"not-in-set": 1, "bad-signature": 1, "garbage": 1}
            assert all(not f for f in finals)
            await chans[0].publish(gws[0].sign(1, header))
            await chans[1].publish(gws[1].sign(1, header))
            for ch, f in zip(chans, finals, strict=True):
                await ch.wait(lambda f=f: len(f) == 1, 10)
                assert f[0].height == 1 and f[0].hash == header
                assert {w for w, _ in f[0].sigs} == {gws[0].id, gws[1].id}
            # an old signature replayed does not finalise anything new
            await chans[2].publish(gws[0].sign(1, header))
            await chans[1].wait(lambda: chans[1].refused["stale"] == 1, 10)
            assert [len(f) for f in finals] == [1, 1, 1]
        finally:
            for ch in chans:
                await ch.stop()
            for nc in conns:
                await nc.close()

    run(body)
