"""A derived service (edge analytics) sold by the market operator of a quorum
domain: three gateway processes on a real 3-node NATS cluster, each
configured with the same `[[derived]]` service (docs/CONSENSUS.md, "Derived
services on replicas"). The issuing gateway buys the source stream from a
supplier (a host client whose signed readings go out on its data topic through
NATS), offers the rolling mean, and a buyer (a host client reading the
derived stream on NATS) buys it: readings delivered, the first batch
committed and judged once on every chain. The issuer is SIGKILLed in the
middle of the agreement; the gateway that takes the lease over continues the
stream from the tail the cluster holds, and the next batches are supplied,
committed and judged. Every index the buyer received carries one value (the
source's values change with every derived reading, so a reading derived anew
for an index would differ), every batch is paid once, the operator's seqs are
unique, and `chain verify` accepts the survivors' data directories."""

from __future__ import annotations

import asyncio
import re
import subprocess

from gateway.cluster import link
from gateway.cluster.intake import TxIntake
from shared import stream, streamroot
from shared import tx as txm
from tests.cluster.procs import GatewayProc, issuers, until
from tests.cluster.quorum import AUTHORITY, DOMAIN, make_dirs
from tests.cluster.test_replica_market import chain_txs, events, paid_batches
from tests.support.gwtest import Device
from tests.support.nats import run
from tools.build import tool

OP_ID = txm.device_id(AUTHORITY[1])
WINDOW = 24  # source readings the operator buys (its DEMAND's quantity)
QTY = 12  # derived readings the buyer buys: 3 batches of 4
DERIVED = ('\n[[derived]]\nname = "temperature-mean"\nsource = "temperature"\n'
           f'window = {WINDOW}\nunit = "cC"\nprice = 2\ninterval_s = 1\n')


def test_derived_service_across_a_take_over(tmp_path, nats_cluster):
    sup, buy = Device("d-supplier", DOMAIN), Device("d-buyer", DOMAIN)
    dirs = make_dirs(tmp_path, [sup, buy], trust=True, authority_balance=10_000)
    gws = [GatewayProc(d, i, nats_cluster) for i, d in enumerate(dirs)]
    for g in gws:  # market_fee_bps before the [[derived]] table
        g.toml.write_text(g.toml.read_text() + "market_fee_bps = 500\n" + DERIVED)

    def on_all(among, pred) -> bool:
        return all(pred(g.data_dir) for g in among)

    def match_of(d, buyer: bytes, service: str) -> bytes | None:
        for e in events(d, "match"):
            if e[2] == buyer and e[7] == service:
                return e[1]
        return None

    got: dict[int, set[bytes]] = {}  # index -> the distinct readings the buyer received
    src: dict[str, bytes] = {}
    sent = [0]

    async def body():
        nc = await link.connect(nats_cluster.urls)
        intake = TxIntake(nc.jetstream(), DOMAIN, "clients")
        arrived = asyncio.Event()

        async def on_derived(msg) -> None:
            idx = stream.open_reading(bytes(msg.data), AUTHORITY[1])[1]  # signed by the operator
            got.setdefault(idx, set()).add(bytes(msg.data))
            arrived.set()

        async def source_reading() -> None:
            """The supplier's next source reading (each a different value, so the
            rolling mean moves with every derived reading)."""
            i = sent[0]
            if i >= WINDOW:
                return
            r = stream.reading(sup.priv, sup.id, src["aid"], i, 2000 + 37 * i * i, -2)
            await nc.publish(f"tl.{DOMAIN}.data.{sup.id.hex()}.{src['aid'].hex()}", r)
            sent[0] += 1

        try:
            await asyncio.gather(*(g.start() for g in gws))
            await intake.submit(sup.make(txm.TYPE_OFFER, {
                1: "temperature", 2: "cC", 3: 1, 4: 1, 5: "", 6: 3600, 7: 1}))
            # the issuer deploys the contract, buys the source and offers the mean
            try:
                await until(lambda: on_all(gws, lambda d: match_of(d, OP_ID, "temperature")),
                            gws, 90, "the operator's purchase of the source")
            except AssertionError as e:  # with more of each gateway's lines
                raise AssertionError("\n".join([str(e)] + [g.tail(60) for g in gws])) from None
            src["aid"] = match_of(gws[0].data_dir, OP_ID, "temperature")
            await source_reading()
            demand = buy.make(txm.TYPE_DEMAND, {1: "temperature-mean", 2: 2, 3: QTY, 4: 600,
                                                5: "latest"})
            aid = txm.decode(demand).id[:16]
            await nc.subscribe(f"tl.{DOMAIN}.data.{OP_ID.hex()}.{aid.hex()}", cb=on_derived)
            await nc.flush()
            await intake.submit(demand)

            async def feed_until(pred, among, timeout, what) -> None:
                """One source reading per derived reading received, until pred()."""
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while not pred():
                    if loop.time() > deadline:
                        raise AssertionError(f"timed out waiting for {what}\n"
                                             + "\n".join(g.tail() for g in among))
                    try:
                        await asyncio.wait_for(arrived.wait(), 0.5)
                    except TimeoutError:
                        continue
                    arrived.clear()
                    await source_reading()

            await feed_until(lambda: on_all(gws, lambda d: 0 in paid_batches(d, aid)), gws,
                             90, "the first derived batch paid on every chain")
            # mid-batch: readings of the next batch out, not yet committed
            await feed_until(lambda: max(got) >= 5, gws, 30, "two readings of batch 1")
            first = issuers(gws)
            assert len(first) == 1, [g.tail() for g in gws]
            victim = first[0]
            victim.kill()
            await victim.stop()
            rest = [g for g in gws if g is not victim]
            await feed_until(lambda: on_all(rest, lambda d: sorted(paid_batches(d, aid))
                                            == [0, 1, 2]), rest, 90,
                             "every derived batch paid on the survivors")
            assert len(issuers(rest)) == 1
            heir = issuers(rest)[0]
            # the readings 4.. the former issuer claimed and published, sent again
            # by the heir with their bytes, not derived anew
            assert any(re.search(r"continued at index=\d+ batch=1 \(sent again [1-9]", x)
                       for x in heir.lines), heir.tail()
        finally:
            await nc.close()
            for g in gws:
                await g.stop()
        # the buyer received every index, each with one value only
        assert sorted(got) == list(range(QTY)), sorted(got)
        assert all(len(v) == 1 for v in got.values()), {i: len(v) for i, v in got.items()}
        values = [stream.open_reading(next(iter(got[i])), AUTHORITY[1])[2] for i in range(QTY)]
        assert len(set(values)) > 2, values  # the mean moved along the stream
        for g in rest:
            assert sorted(paid_batches(g.data_dir, aid)) == [0, 1, 2]  # each once
            assert not events(g.data_dir, "delivery-failed")
            txs = chain_txs(g.data_dir)
            mine = [t.seq for t in txs if t.sender == OP_ID]
            assert mine == sorted(set(mine))
            calls = [(txm.decode(t.message).body[3], t.status) for t in txs
                     if t.sender == OP_ID and t.type == txm.TYPE_CONTRACT_CALL
                     and txm.decode(t.message).body[2] == "commit"]
            commits = [args for args, status in calls if args[0] == aid and status == 0]
            assert sorted(c[1] for c in commits) == [0, 1, 2]
            for _, _, first_i, count, root in commits:  # the roots of what the buyer got
                assert stream_root(got, first_i, count) == root
            assert not [t for t in txs if t.type == txm.TYPE_PROOF]
            v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                                str(g.data_dir)], capture_output=True, text=True, timeout=120)
            assert v.returncode == 0, v.stdout + v.stderr

    run(body, 240)


def stream_root(got: dict[int, set[bytes]], first: int, count: int) -> bytes:
    b = streamroot.Batch()
    for i in range(first, first + count):
        b.add(next(iter(got[i])))
    return b.root()
