"""Three gateways of one quorum domain (3 validators, k = 2) on a real 3-node
NATS cluster, running the node pipeline with gateway/cluster/replica.py:
every transaction submitted to the intake is committed exactly once, every
block is final with a certificate of k votes of the set, and all gateways
hold the same chain, which `chain verify` accepts. Proposals crafted by the
test and appended straight to the log are skipped by every gateway and kept
as evidence; a replayed vote finalises nothing new."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from gateway.cluster import link
from gateway.cluster.log import ProposalLog
from gateway.cluster.replica import Proposal
from gateway.cluster.sigs import HeaderSig
from gateway.db import verify as replay
from gateway.ledger import blocks, consensus
from shared import commit_gateway
from shared import tx as txm
from tests.cluster.procs import Receipts
from tests.cluster.quorum import (
    AUTHORITY,
    DOMAIN,
    OUTSIDER,
    VALIDATORS,
    Running,
    config,
    make_dirs,
    until,
)
from tests.support.gwtest import Device
from tests.support.nats import run


def chain_ids(r: Running) -> list[bytes]:
    s = r.store
    return [t.id for b in s.iter_blocks(1) for t in s.block_txs(b.height)]


def all_final(r: Running) -> bool:
    return r.final_height() >= 0


async def start_three(tmp_path, nats_cluster, devices) -> list[Running]:
    dirs = make_dirs(tmp_path, devices)
    gws = [Running(config(d, i, nats_cluster)) for i, d in enumerate(dirs)]
    for r in gws:
        await r.start()
    return gws


async def until_settled(r: Running, timeout: float) -> None:
    """Until the intake holds nothing this gateway has not acknowledged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := await r.rep.intake.backlog()) != 0:
        assert loop.time() < deadline, f"{left} deliveries never settled"
        await asyncio.sleep(0.05)


def check_same_chain(gws: list[Running], n_txs: int) -> None:
    heads = {r.store.head().hash for r in gws}
    assert len(heads) == 1, "gateways differ"
    for r in gws:
        ids = chain_ids(r)
        assert len(ids) == n_txs and len(set(ids)) == n_txs  # each tx once
        g = r.gw.led.genesis
        rep = replay.verify_chain(r.store, g)
        assert rep.ok, rep.error
        for b in r.store.iter_blocks(1):
            cert = r.store.certificate(b.height)
            assert cert is not None and len(cert) >= 2, b.height
            vs = consensus.set_at(consensus.schedule(r.gw.led.state), b.height)
            consensus.check_certificate(cert, b.header_bytes, b.fields, vs)


def test_three_gateways_commit_each_tx_once_with_quorum_certificates(tmp_path, nats_cluster):
    devices = [Device(f"rep-{i}", DOMAIN) for i in range(3)]
    txs = [d.reading(100 + n) for d in devices for n in range(10)]

    async def body():
        gws = await start_three(tmp_path, nats_cluster, devices)
        try:
            intake = gws[0].rep.intake
            for m in txs:
                await intake.submit(m)
            want = {txm.decode(m).id for m in txs}
            await until(lambda: all(set(chain_ids(r)) == want and all_final(r) for r in gws),
                        gws, 60, "30 txs final on all three")
            check_same_chain(gws, len(txs))
            # each gateway settles every delivery (acknowledged once final)
            for r in gws:
                await until(lambda r=r: r.rep.unsettled == 0, gws, 30, "deliveries settled")
                # what the proposals brought before the intake did is fetched later,
                # and settled at once as already committed
                await until_settled(r, 30)
            finals = [x for r in gws for x in r.lines if x.startswith("final height=")]
            assert finals and all("votes=2/3" in x or "votes=3/3" in x for x in finals)
            assert sum(r.rep.proposed for r in gws) == gws[0].store.head().height
            # a device sends a committed tx again (its receipt was lost): the gateway
            # serving it answers with the stored receipt, the others stay silent
            again = txs[0]
            sender = txm.decode(again).sender
            before = [r.gw.counters.resent_receipts for r in gws]
            nc = await link.connect(nats_cluster.urls)
            try:
                heard = Receipts(AUTHORITY[1])  # checked as a board checks them
                await heard.listen(nc)
                await nc.flush()
                await intake.submit(again)
                await until(lambda: txm.decode(again).id in heard.ok, gws, 30,
                            "the stored receipt sent again")
                assert heard.bad == 0, heard.why
            finally:
                await nc.close()
            served = [r.rep.serves(sender) for r in gws]
            assert served.count(True) == 1
            assert [r.gw.counters.resent_receipts - b for r, b in zip(gws, before, strict=True)] \
                == [int(x) for x in served]
        finally:
            for r in gws:
                await r.stop()
    run(body)


def test_crafted_proposals_are_skipped_by_all_and_kept_as_evidence(tmp_path, nats_cluster):
    devices = [Device(f"craft-{i}", DOMAIN) for i in range(2)]
    alice, bob = devices

    async def body():
        gws = await start_three(tmp_path, nats_cluster, devices)
        nc = await link.connect(nats_cluster.urls)
        try:
            await gws[0].rep.intake.submit(alice.reading(1))
            await until(lambda: all(r.final_height() == 1 for r in gws),
                        gws, 60, "block 1 final")
            led = gws[0].gw.led
            head = led.head
            parent = led.store.certificate(1)
            priv0, pub0 = VALIDATORS[0]
            apriv = led.authority_priv

            def proposal(txs: list[bytes], *, state=None, prev=None, signer=(priv0, pub0),
                         parent_cert=parent) -> bytes:
                b = blocks.build_block(prev or head, [txm.decode(m) for m in txs],
                                       state or led.state, 1_800_000_000, apriv,
                                       led.genesis.authority_id, domain=DOMAIN,
                                       rules=led.rules)
                vote = commit_gateway.vote(signer[0], signer[1], b.hash)
                return Proposal(b.signed_header, [t.message for t in b.txs], signer[1], vote,
                                parent_cert).encode()

            good = alice.reading(2)
            forged = bytearray(bob.reading(1))
            forged[-1] ^= 1  # a bad signature inside
            bob.seq = 0
            crafted = {
                "garbage": b"\x01not a proposal",
                "outsider": proposal([good], signer=OUTSIDER),
                "bad-tx-signature": proposal([bytes(forged)]),
                "wrong-parent": proposal([good], prev=led.store.get_block(0)),
                "no-parent-cert": proposal([good], parent_cert=None),
            }
            # an invented balance: a block built on a copy of the state in which
            # alice holds 10x her coins (its roots are right for that state)
            rich = led.store.load_state()
            rec = rich.get(alice.id)
            assert rec is not None
            rich.apply_diff({alice.id: replace(rec, balance=rec.balance * 10)}, {})
            crafted["inflated"] = proposal([good], state=rich)
            plog = ProposalLog(nc.jetstream(), DOMAIN)
            for data in crafted.values():
                last = await plog.last_seq()
                await plog.append(data, last, msg_id=None)
            last = await plog.last_seq()
            for r in gws:
                await r.rep.follower.wait_applied(last, 30)
            for r in gws:
                assert r.store.head().height == 1  # nothing crafted applied
                assert [x[0] for x in r.store.refused_entries()] == list(range(2, last + 1))
            reasons = [x[2] for x in gws[0].store.refused_entries()]
            assert all(reasons == [x[2] for x in r.store.refused_entries()] for r in gws)
            assert reasons[0].startswith("garbage")
            assert reasons[1].startswith("not-in-set")
            assert "tx-signature" in reasons[2]
            assert "wrong-parent" in reasons[3]
            assert "no parent certificate" in reasons[4]
            assert "header-mismatch state_root" in reasons[5]

            # a replayed vote of block 1, under a new height, counts for nothing
            old = HeaderSig(2, head.hash, pub0, commit_gateway.vote(priv0, pub0, head.hash))
            for _, pub in VALIDATORS:
                await nc.publish(link.sig_subject(DOMAIN), HeaderSig(
                    2, head.hash, pub, commit_gateway.vote(
                        dict((p, k) for k, p in VALIDATORS)[pub], pub, head.hash)).encode())
            await nc.publish(link.sig_subject(DOMAIN), old.encode())
            await nc.flush()
            # the chain goes on: the next real block is final
            await gws[1].rep.intake.submit(good)
            await until(lambda: all(r.final_height() == 2 for r in gws),
                        gws, 60, "block 2 final after the crafted entries")
            for r in gws:
                assert r.rep.sigchan.refused["bad-signature"] >= 3
                assert r.store.get_block(2).hash != head.hash
            check_same_chain(gws, 2)
        finally:
            await nc.close()
            for r in gws:
                await r.stop()
    run(body)


def test_a_gateway_back_after_the_last_block_learns_its_certificate(tmp_path, nats_cluster):
    """gw0 is away while block 1 becomes final on gw1 and gw2, and no block
    follows (so no proposal brings block 1's certificate). Started again, gw0
    applies block 1 from the log and votes on it; the others, for whom block
    1 is final, answer that late vote with theirs, and gw0 finalises it."""
    devices = [Device("late-0", DOMAIN)]
    dirs = make_dirs(tmp_path, devices)

    async def body():
        gws = [Running(config(d, i, nats_cluster)) for i, d in enumerate(dirs)]
        for r in gws[1:]:
            await r.start()
        late = None
        try:
            await gws[1].rep.intake.submit(devices[0].reading(1))
            await until(lambda: all(r.final_height() == 1
                                    for r in gws[1:]), gws[1:], 60, "block 1 final on two")
            late = await Running(config(dirs[0], 0, nats_cluster)).start()
            await until(lambda: late.final_height() == 1, [late], 30,
                        "the late gateway to finalise block 1")
            assert late.store.certificate(1) is not None
            assert sum(r.rep.sigchan.refused["stale"] for r in gws[1:]) >= 1  # its late vote
        finally:
            for r in ([late] if late else []) + gws[1:]:
                await r.stop()
    run(body)
