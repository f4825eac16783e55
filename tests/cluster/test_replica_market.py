"""The market in a quorum domain (3 validators, k = 2) run by three gateway
processes on a real 3-node NATS cluster (gateway/cluster/issuer.py): one
gateway at a time is the market operator. It deploys the agreement contract;
a supplier and a buyer (host clients: their transactions into the intake,
the supplier's signed readings on its data topic through NATS) trade; the
issuer judges the first batch and the supplier is paid, once, on every
gateway's chain. The issuing gateway is SIGKILLed; another takes the lease
over, judges the next batch (from the readings its own stream store
kept: every gateway's market node keeps the readings) and closes a demand
that stopped waiting. A device registered while the operator could not pay
its grant is owed it across the take-over: the new issuer grants it, once,
as soon as the operator is funded. The operator subject of the intake holds one transaction per seq,
nobody files a PROOF against the authority (trust on), and `thingledger
chain verify` accepts every data directory, the killed gateway's too."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from gateway.cluster import link
from gateway.cluster.intake import TxIntake
from gateway.db.store import Store
from gateway.market.ledger import rules as ledger
from gateway.market.node.streams import StreamStore
from gateway.node.config import DB_FILE, STREAMS_FILE
from shared import messages, stream, streamroot
from shared import tx as txm
from tests.cluster.procs import GatewayProc, issuers, until
from tests.cluster.quorum import AUTHORITY, DOMAIN, make_dirs
from tests.support.gwtest import Device
from tests.support.nats import run
from tools.build import tool

OP_ID = txm.device_id(AUTHORITY[1])
PRICE, QTY, BATCH, FEE_BPS = 5, 8, 4, 500
GRANT = 100  # more than the operator earns in fees here: owed until it is funded


def chain_txs(data_dir: Path) -> list[Any]:
    s = Store(data_dir / DB_FILE, readonly=True)
    try:
        return [t for b in s.iter_blocks(1) for t in s.block_txs(b.height)]
    finally:
        s.close()


def events(data_dir: Path, name: str) -> list[list[Any]]:
    return [e for t in chain_txs(data_dir) for e in t.events if name in e[:2]]


def balance(data_dir: Path, pid: bytes) -> int:
    s = Store(data_dir / DB_FILE, readonly=True)
    try:
        return dict(s.devices())[pid].balance
    finally:
        s.close()


def paid_batches(data_dir: Path, aid: bytes) -> list[int]:
    return [e[3] for e in events(data_dir, "delivery-paid") if e[2] == aid]


async def op_subject_seqs(js) -> list[int]:
    """The seqs of the transactions on the intake's operator subject, in order."""
    out, seq = [], 0
    while True:
        try:
            m = await js.get_msg(link.intake_stream(DOMAIN), seq + 1, next=True,
                                 subject=link.operator_subject(DOMAIN))
        except Exception:  # noqa: BLE001 - NotFoundError: no more
            return out
        seq = int(m.seq)
        t = txm.decode(bytes(m.data))
        assert t.sender == OP_ID
        out.append(t.seq)


def test_one_operator_at_a_time_with_fail_over(tmp_path, nats_cluster):
    sup, buy = Device("m-supplier", DOMAIN), Device("m-buyer", DOMAIN)
    dirs = make_dirs(tmp_path, [sup, buy], trust=True)
    gws = [GatewayProc(d, i, nats_cluster) for i, d in enumerate(dirs)]
    for g in gws:
        g.toml.write_text(g.toml.read_text() + f"market_fee_bps = {FEE_BPS}\n"
                          f"market_grant = {GRANT}\n")

    def on_all(among: list[GatewayProc], pred) -> bool:
        return all(pred(g.data_dir) for g in among)

    held: dict[str, Any] = {}

    async def body():
        nc = await link.connect(nats_cluster.urls)
        intake = TxIntake(nc.jetstream(), DOMAIN, "clients")
        try:
            await asyncio.gather(*(g.start() for g in gws))
            # the first issuer deploys the agreement contract, final on all three
            await until(lambda: on_all(gws, lambda d: any(
                t.sender == OP_ID and t.type == txm.TYPE_CONTRACT_ADMIN
                and t.status == messages.STATUS_OK for t in chain_txs(d))),
                gws, 60, "the agreement contract deployed")
            assert len(issuers(gws)) == 1
            await intake.submit(sup.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE,
                                                          4: 1, 5: "", 6: 3600, 7: 1}))
            demand = buy.make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE, 3: QTY, 4: 600,
                                                5: "cheapest"})
            await intake.submit(demand)
            aid = txm.decode(demand).id[:16]
            await until(lambda: on_all(gws, lambda d: any(
                e[1] == aid for e in events(d, "match"))), gws, 60, "the agreement open")

            async def deliver(batch: int, among: list[GatewayProc]) -> None:
                """The supplier's readings of one batch on its data topic, then its commit."""
                b = streamroot.Batch()
                for i in range(batch * BATCH, (batch + 1) * BATCH):
                    r = stream.reading(sup.priv, sup.id, aid, i, 2100 + i, -2)
                    b.add(r)
                    await nc.publish(f"tl.{DOMAIN}.data.{sup.id.hex()}.{aid.hex()}", r)
                await nc.flush()
                await intake.submit(sup.make(txm.TYPE_CONTRACT_CALL, {
                    1: ledger.AGREEMENT, 2: "commit",
                    3: [aid, batch, batch * BATCH, BATCH, b.root()], 4: 0, 5: 50_000}))
                await until(lambda: on_all(among, lambda d: batch in paid_batches(d, aid)),
                            among, 60, f"batch {batch} paid on {[g.name for g in among]}")

            await deliver(0, gws)
            held["aid"] = aid
            first = issuers(gws)
            assert len(first) == 1
            victim = first[0]
            held["victim"] = victim
            # a newcomer registers; the issuer cannot pay its grant: owed
            newcomer = Device("m-newcomer", DOMAIN)
            await intake.submit(newcomer.register())
            await until(lambda: any(f"no grant for {newcomer.id.hex()[:8]}" in x
                                    for x in victim.lines), gws, 60, "the grant owed")
            victim.kill()
            await victim.stop()
            rest = [g for g in gws if g is not victim]
            await deliver(1, rest)  # judged by the gateway that took the lease over
            # its keeper closes a demand that stopped waiting (nothing offered)
            waiting = buy.make(txm.TYPE_DEMAND, {1: "humidity", 2: 1, 3: 1, 4: 1,
                                                 5: "cheapest"})
            await intake.submit(waiting)
            wid = txm.decode(waiting).id[:16]
            await until(lambda: on_all(rest, lambda d: any(
                e[1] == wid for e in events(d, "demand-closed"))), rest, 60,
                "the waiting demand closed by the new issuer")
            assert len(issuers(rest)) == 1
            # the operator funded: the new issuer grants what the former one owed, once
            await intake.submit(buy.transfer(OP_ID, GRANT))
            await until(lambda: on_all(rest, lambda d: balance(d, newcomer.id) == GRANT),
                        rest, 60, "the newcomer granted by the new issuer")
            for g in rest:
                assert sorted(paid_batches(g.data_dir, aid)) == [0, 1]  # each once
                assert not events(g.data_dir, "delivery-failed")
                earned = 2 * (BATCH * PRICE - BATCH * PRICE * FEE_BPS // 10_000)
                assert balance(g.data_dir, sup.id) == 1000 + earned
                txs = chain_txs(g.data_dir)
                assert not [t for t in txs if t.type == txm.TYPE_PROOF]
                mine = [t.seq for t in txs if t.sender == OP_ID]
                assert mine == sorted(set(mine))
                granted = [t for t in txs if t.sender == OP_ID and t.type == txm.TYPE_TRANSFER
                           and t.status == messages.STATUS_OK]
                assert [t.events for t in granted] == [[["transfer", newcomer.id, GRANT]]]
            seqs = await op_subject_seqs(nc.jetstream())
            assert len(seqs) >= 3 and seqs == sorted(set(seqs)), seqs  # one tx per seq
            for g in gws:
                assert not [x for x in g.lines if "equivocation" in x], g.tail()
        finally:
            await nc.close()
            for g in gws:
                await g.stop()
        for g in gws:
            v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                                str(g.data_dir)], capture_output=True, text=True, timeout=120)
            assert v.returncode == 0, v.stdout + v.stderr
        # every gateway's market node kept the readings it received (the
        # killed one those of the first batch), not only the issuer's
        for g in gws:
            st = StreamStore(g.data_dir / STREAMS_FILE)
            try:
                want = BATCH if g is held["victim"] else QTY
                assert st.count(held["aid"]) >= want, g.name
            finally:
                st.close()
    run(body, 240)
