"""A validator's double vote filed as a PROOF on chain (docs/CONSENSUS.md,
"Double votes filed as proofs"): three gateways of a quorum domain with
trust on, on a real 3-node NATS cluster. Holding validator 0's key, the test
publishes validator 0's vote on a sibling of final block 1, then appends the
sibling's proposal to the log (every gateway refuses it and keeps its
header): the other gateways file the two votes as a PROOF through the
intake; it is committed once on every chain and validator 0's id is banned,
and the chain takes validator 0 out of the set from the next height (that
block final with 2 of the 2 left; a vote of its key refused not-in-set).
A vote on a header no gateway saw proves nothing: counted (unknown-header),
not filed."""

from __future__ import annotations

from gateway.cluster import link
from gateway.cluster.log import ProposalLog
from gateway.cluster.replica import Proposal
from gateway.cluster.sigs import HeaderSig
from gateway.db import verify as replay
from gateway.ledger import blocks, consensus
from gateway.trust import standing as st
from gateway.trust.rules import VOTE_EQUIVOCATION
from shared import commit_gateway, header, messages
from shared import tx as txm
from tests.cluster.quorum import DOMAIN, VALIDATORS, Running, config, make_dirs, until
from tests.support.gwtest import Device
from tests.support.nats import run


def proofs(r: Running) -> list[txm.Tx]:
    s = r.store
    return [txm.decode(t.message) for b in s.iter_blocks(1) for t in s.block_txs(b.height)
            if t.type == txm.TYPE_PROOF and t.status == messages.STATUS_OK]


def test_a_double_vote_is_filed_once_and_bans_the_validator(tmp_path, nats_cluster):
    alice, bob = Device("dv-alice", DOMAIN), Device("dv-bob", DOMAIN)
    # the validators hold accounts: a gateway signs its proofs with its validator key
    dirs = make_dirs(tmp_path, [alice, bob], accounts={p: 0 for _, p in VALIDATORS},
                     trust=True)
    priv0, pub0 = VALIDATORS[0]
    v0 = txm.device_id(pub0)

    async def body():
        gws = [Running(config(d, i, nats_cluster)) for i, d in enumerate(dirs)]
        for r in gws:
            await r.start()
        nc = await link.connect(nats_cluster.urls)
        try:
            await gws[0].rep.intake.submit(alice.reading(1))
            await until(lambda: all(r.final_height() == 1
                                    for r in gws), gws, 30, "block 1 final")
            led = gws[0].gw.led
            one = led.store.get_block(1)
            # a sibling of block 1: other txs on the same parent, voted by validator 0
            sib = blocks.build_block(led.store.get_block(0), [txm.decode(bob.reading(1))],
                                     led.state, one.fields["time"] + 1, led.authority_priv,
                                     led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
            assert sib.height == 1 and sib.hash != one.hash
            vote = commit_gateway.vote(priv0, pub0, sib.hash)
            # validator 0's vote on block 1 reached every gateway (kept to pair with)
            own = HeaderSig(1, one.hash, pub0, b"")
            i0 = sorted(p for _, p in VALIDATORS).index(pub0)

            def paired(r: Running) -> bool:
                cert = r.store.certificate(1) or []
                return r.rep.book.has(own) or any(i == i0 for i, _ in cert)
            await until(lambda: all(paired(r) for r in gws), gws, 10,
                        "validator 0's vote on block 1 seen")
            # a vote on a header no gateway saw proves nothing: counted, not filed
            unseen = blocks.build_block(led.store.get_block(0), [txm.decode(bob.reading(2))],
                                        led.state, one.fields["time"] + 2, led.authority_priv,
                                        led.genesis.authority_id, domain=DOMAIN,
                                        rules=led.rules)
            await nc.publish(link.sig_subject(DOMAIN), HeaderSig(
                1, unseen.hash, pub0, commit_gateway.vote(priv0, pub0, unseen.hash)).encode())
            await nc.flush()
            await until(lambda: all(r.rep.book.counts["unknown-header"] == 1 for r in gws[1:]),
                        gws, 10, "the vote on an unknown header counted")
            assert all(not r.rep.book.counts["filed"] for r in gws)
            assert b'thingledger_double_votes_total{outcome="unknown-header"} 1.0' \
                in gws[1].gw.metrics_text()
            # the vote on the sibling comes before the sibling's proposal: it waits for it
            await nc.publish(link.sig_subject(DOMAIN),
                             HeaderSig(1, sib.hash, pub0, vote).encode())
            await nc.flush()
            await until(lambda: all(sib.hash in r.rep.book.waiting for r in gws[1:]),
                        gws, 10, "the double vote waiting for the sibling's header")
            assert all(not r.rep.book.counts["filed"] for r in gws)
            # the sibling appended to the log: refused by all, its header kept, the proof filed
            plog = ProposalLog(nc.jetstream(), DOMAIN)
            last = await plog.last_seq()
            await plog.append(Proposal(sib.signed_header, [t.message for t in sib.txs], pub0,
                                       vote, None).encode(), last, msg_id=None)
            for r in gws:
                await r.rep.follower.wait_applied(last + 1, 30)
                assert r.store.get_block(1).hash == one.hash  # refused by all
            await until(lambda: all(st.level_of(r.gw.led.state, v0) == st.BANNED
                                    and r.final_height() >= 0 for r in gws), gws, 30,
                        "the proof committed and final on all three")
            for r in gws:
                ps = proofs(r)
                assert len(ps) == 1 and ps[0].body[1] == VOTE_EQUIVOCATION
                assert ps[0].sender in {txm.device_id(p) for _, p in VALIDATORS[1:]}
                h = st.history(r.gw.led.state, v0)[-1]
                assert h[2] == ps[0].id and h[3] == "proof:" + VOTE_EQUIVOCATION
                assert replay.verify_chain(r.store, r.gw.led.genesis).ok
            filed = sum(r.rep.book.counts["filed"] for r in gws)
            assert 1 <= filed <= 2  # gw1 and gw2 may both file; the chain took one
            assert gws[0].rep.book.counts["own-key"] == 1, gws[0].lines  # not filed against itself
            for r in gws[1:]:  # the evidence is kept in each filer's store too
                ev = r.store.equivocations()
                assert [(e.pubkey, e.height) for e in ev] == [(pub0, 1)]
            # the chain acts on the proof: validator 0 is out of the set from the next
            # height, announced by the proof block's header; k = 2 of the two left
            h = gws[1].store.head().height
            left = consensus.ValidatorSet.of([p for _, p in VALIDATORS[1:]], 2)
            assert gws[1].store.get_block(h).fields["next_validators"] == left.hash
            assert all(r.rep.set_at(h + 1) == left and r.rep._is_member(h, pub0)
                       for r in gws)
            await gws[1].rep.intake.submit(alice.reading(2))
            await until(lambda: all(r.final_height() == h + 1
                                    for r in gws), gws, 30, f"block {h + 1} final")
            for r in gws:
                consensus.check_certificate(r.store.certificate(h + 1),
                                            r.store.get_block(h + 1).header_bytes,
                                            r.store.get_block(h + 1).fields, left)
            assert any(x.startswith(f"final height={h + 1} votes=2/2") for x in gws[1].lines)
            assert any(f"validator set of height {h + 1}: this gateway follows only" in x
                       for x in gws[0].lines), gws[0].lines
            # a vote of its key from there on is refused (not-in-set)
            some = header.block_hash(b"a header validator 0 may no longer finalise")
            await nc.publish(link.sig_subject(DOMAIN),
                             HeaderSig(h + 2, some, pub0,
                                       commit_gateway.vote(priv0, pub0, some)).encode())
            await nc.flush()
            for r in gws[1:]:
                await r.rep.sigchan.wait(lambda r=r: r.rep.sigchan.refused["not-in-set"] >= 1,
                                         10)
        finally:
            await nc.close()
            for r in gws:
                await r.stop()
    run(body)
