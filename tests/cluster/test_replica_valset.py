"""A running quorum domain changes its validator set (VALSET,
docs/CONSENSUS.md "Validator-set changes in a running cluster"), on a real
3-node NATS cluster with four in-process gateways (gateway/cluster/replica.py):

- genesis: gw0, gw1, gw2 with k = 2; gw3 (its own key, outside the set)
  follows the log from the start;
- the owner adds gw3 with k = 3 from height 3: from there a block is final
  only with 3 votes of the four, and gw3's votes count (with gw0 stopped,
  blocks are final only with gw3's vote);
- the owner then removes gw2 from height 6 (k = 2 of gw0, gw1, gw3): gw2
  keeps following but stops voting, a vote of its key there is refused
  (not-in-set), and finality goes on with gw1 and gw3;
- every gateway holds one chain, whose certificates each check against the
  set in force at their height, and which `chain verify` accepts."""

from __future__ import annotations

from gateway.cluster import link
from gateway.cluster.sigs import HeaderSig
from gateway.db import verify as replay
from gateway.ledger import consensus
from shared import commit_gateway, header
from shared import tx as txm
from tests.cluster.quorum import DOMAIN, SPARE, VALIDATORS, Running, config, make_dirs, until
from tests.support.gwtest import Device
from tests.support.nats import run

KEYS = [*VALIDATORS, SPARE]  # gw<i>'s (priv, pub)
PUBS = [p for _, p in KEYS]
S0 = consensus.ValidatorSet.of(PUBS[:3], 2)  # genesis
S1 = consensus.ValidatorSet.of(PUBS, 3)  # gw3 added, from height ADD
S2 = consensus.ValidatorSet.of([PUBS[i] for i in (0, 1, 3)], 2)  # gw2 removed, from DROP
ADD, DROP = 3, 6


def set_of(height: int) -> consensus.ValidatorSet:
    return S0 if height < ADD else S1 if height < DROP else S2


def valset(owner: Device, start: int, vs: consensus.ValidatorSet) -> bytes:
    return owner.make(txm.TYPE_VALSET, {1: start, 2: vs.threshold, 3: list(vs.pubkeys)})


def check_chain(gws: list[Running], height: int) -> None:
    """One chain of `height` blocks on every gateway, each block final with a
    certificate of exactly k votes of the set of its height."""
    assert len({r.store.head().hash for r in gws}) == 1, "gateways differ"
    for r in gws:
        assert r.store.head().height == height
        rep = replay.verify_chain(r.store, r.gw.led.genesis)
        assert rep.ok, rep.error
        for b in r.store.iter_blocks(1):
            vs = set_of(b.height)
            assert b.fields["validators"] == vs.hash
            assert b.fields["next_validators"] == set_of(b.height + 1).hash
            cert = r.store.certificate(b.height)
            assert cert is not None and len(cert) == vs.threshold, (b.height, cert)
            consensus.check_certificate(cert, b.header_bytes, b.fields, vs)


def signers(r: Running, height: int) -> set[bytes]:
    vs = set_of(height)
    return {vs.pubkeys[i] for i, _ in r.store.certificate(height)}


def test_a_running_cluster_follows_validator_set_changes(tmp_path, nats_cluster):
    dev, owner = Device("valset-dev", DOMAIN), Device("valset-owner", DOMAIN)
    dirs = make_dirs(tmp_path, [dev], n=4, accounts={owner.pub: 10}, owner=owner.pub)

    async def body():
        gws = [Running(config(d, i, nats_cluster)) for i, d in enumerate(dirs)]
        live = list(gws)
        for r in gws:
            await r.start()
        nc = await link.connect(nats_cluster.urls)

        async def block(message: bytes, height: int) -> None:
            await live[-1].rep.intake.submit(message)
            await until(lambda: all(r.final_height() == height
                                    for r in live), live, 30, f"block {height} final")
        try:
            assert not gws[3].rep.member_at(1) and gws[0].rep.member_at(1)
            await block(valset(owner, ADD, S1), 1)
            await block(dev.reading(1), 2)
            await block(dev.reading(2), ADD)
            assert gws[3].rep.member_at(ADD + 1)
            check_chain(gws, ADD)  # all four: one chain
            # gw0 stops: k = 3 of gw1, gw2, gw3 (gw3's vote is needed)
            await gws[0].stop()
            live.remove(gws[0])
            await block(dev.reading(3), 4)
            assert PUBS[3] in signers(gws[1], 4)
            await block(valset(owner, DROP, S2), 5)
            assert PUBS[3] in signers(gws[1], 5)
            await block(dev.reading(4), DROP)
            await block(dev.reading(5), DROP + 1)
            assert {PUBS[1], PUBS[3]} == signers(gws[1], DROP) == signers(gws[1], DROP + 1)
            check_chain(live, DROP + 1)
            finals = [x for x in gws[1].lines if x.startswith("final height=")]
            assert [x.split()[2] for x in finals] == ["votes=2/3"] * 2 + ["votes=3/4"] * 3 \
                + ["votes=2/3"] * 2, finals
            assert any("validator set of height 3: this gateway votes" in x
                       for x in gws[3].lines)
            assert any("validator set of height 6: this gateway follows only" in x
                       for x in gws[2].lines)
            # gw2 voted on nothing after the change; a vote of its key there is refused
            judges = [gws[1], gws[3]]
            assert all(r.rep.sigchan.refused["not-in-set"] == 0 for r in judges)
            h = DROP + 2
            some = header.block_hash(b"a header gw2 may no longer finalise")
            priv2, pub2 = KEYS[2]
            await nc.publish(link.sig_subject(DOMAIN), HeaderSig(
                h, some, pub2, commit_gateway.vote(priv2, pub2, some)).encode())
            await nc.flush()
            for r in judges:
                await r.rep.sigchan.wait(lambda r=r: r.rep.sigchan.refused["not-in-set"] == 1,
                                         10)
        finally:
            await nc.close()
            for r in live:
                await r.stop()
    run(body)
