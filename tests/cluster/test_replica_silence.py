"""A machine that dies whole (docs/CONSENSUS.md, "Liveness of a gateway"):
its NATS node and its gateway SIGKILLed at once, so no last will is
published (the node that held the gateway's MQTT connection is gone). The
two gateways left count it offline once it has been silent for SILENCE_S
(no status, no vote) and from then on skip its proposer turns: every
following block is proposed by the first of the two live validators in
turn (read from the proposal log: the proposer key of each entry), where
the three-member rotation would have given the dead one's turns to the next
in line after a block interval's wait. Nothing else changes: blocks final
with 2 of 3 votes, every acknowledged transaction once in one chain,
`chain verify` on both data dirs.

The rule itself (one function for turns, serves() and the issuer's
take-over) with a clock of the test's: tests/cluster/test_replica_serves.py."""

from __future__ import annotations

import asyncio

from gateway.cluster import link
from gateway.cluster.log import ProposalLog
from gateway.cluster.replica import Proposal
from shared import header
from shared import tx as txm
from tests.cluster.procs import FINAL, GatewayProc, Load, Receipts, until
from tests.cluster.quorum import AUTHORITY, DOMAIN, VALIDATORS, make_dirs
from tests.cluster.test_replica_faults import advance, check_after, converge
from tests.support.gwtest import Device
from tests.support.nats import run

IDS = [txm.device_id(pub) for _, pub in VALIDATORS]
INTERVAL = 1.0  # s: the wait of the second in turn (the first proposes at once)
RATE = 10.0  # tx/s: every mempool holds transactions at every height


def rotation(ids: list[bytes], height: int) -> list[bytes]:
    live = sorted(ids)
    first = height % len(live)
    return live[first:] + live[:first]


async def proposers(nc) -> dict[int, bytes]:
    """Height -> validator id of the proposer, of every entry of the proposal log
    (a refused or race-losing entry names its height too: the later one counts
    only if it is the block the chain holds, so the test checks the chain's hash)."""
    plog = ProposalLog(nc.jetstream(), DOMAIN)
    out: dict[int, list[tuple[bytes, bytes]]] = {}
    for seq in range(1, await plog.last_seq() + 1):
        p = Proposal.decode((await plog.get(seq)).data)
        fields, hbytes = header.open_signed(AUTHORITY[1], p.signed_header)
        out.setdefault(fields["height"], []).append((header.block_hash(hbytes),
                                                     txm.device_id(p.proposer)))
    return out  # type: ignore[return-value]


def test_a_machine_dead_whole_loses_its_turns_after_the_silence(tmp_path, nats_cluster):
    devices = [Device(f"whole-{i}", DOMAIN) for i in range(4)]

    async def body():
        dirs = make_dirs(tmp_path, devices)
        gws = [GatewayProc(d, i, nats_cluster, interval=INTERVAL) for i, d in enumerate(dirs)]
        victim, rest = 0, [1, 2]
        nc = await link.connect([nats_cluster.nodes[i].url for i in rest])
        receipts = Receipts(AUTHORITY[1])
        load = None
        try:
            await asyncio.gather(*(g.start() for g in gws))
            await receipts.listen(nc)
            load = Load(nc, devices, RATE).start()
            await advance(gws, 3, 60, "3 blocks final on all three")
            # the whole machine: its NATS node and its gateway, no last will
            nats_cluster.nodes[victim].kill()
            gws[victim].kill()
            await gws[victim].stop()
            survivors = [gws[i] for i in rest]
            said = f"gateway {IDS[victim].hex()[:8]} offline (silent for "
            await until(lambda: all(any(said in x for x in g.lines) for g in survivors),
                        survivors, 90, "both survivors counting the dead gateway offline")
            assert not any(f"gateway {IDS[victim].hex()[:8]} offline (last will)" in x
                           for g in survivors for x in g.lines)  # no will came: silence did it
            since = max(g.final_height for g in survivors) + 1
            await advance(survivors, 8, 120, "8 more blocks final on the two left")
            await load.stop()
            await converge(survivors, load, 90)
            heads = {h: hs for h, hs in (await proposers(nc)).items() if h >= since}
            with survivors[0].store() as s:
                chain = {h: s.get_block(h).hash for h in heads if s.get_block(h) is not None}
            live = [IDS[i] for i in rest]
            got = {h: next(who for bh, who in heads[h] if bh == chain[h]) for h in chain}
            assert len(got) >= 8, got
            # every block by the first live validator in turn: none waited for the dead
            want = {h: rotation(live, h)[0] for h in got}
            assert got == want, {h: (got[h].hex()[:8], want[h].hex()[:8]) for h in got}
            # (the three-member rotation would have put the dead one first at some)
            assert any(rotation(IDS, h)[0] == IDS[victim] for h in got)
            # blocks final with 2 of 3 votes on both after the death
            for g in survivors:
                votes = [m.group(2, 3) for m in map(FINAL.search, g.lines)
                         if m and int(m.group(1)) >= since]
                assert votes and all(v == ("2", "3") for v in votes), votes[:5]
        finally:
            if load is not None:
                await load.stop()
            await nc.close()
            for g in gws:
                await g.stop()
        check_after([gws[i] for i in rest], load, receipts)
    run(body, 300)
