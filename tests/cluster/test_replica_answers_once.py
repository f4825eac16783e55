"""Each transaction of a quorum domain is answered once (gateway/cluster/
intake.py IntakeCopies): every gateway reads the whole intake at its own
pace, so the gateway serving a device can follow the proposal log ahead of
its own intake, and finalise (and answer) a block before its intake brings
that block's transactions. Those first copies are settled without a word: a
receipt goes out again only for a later copy in the stream, a device's
resend. (They used to be answered again with the stored receipt: in a
burst, hundreds of transactions got two receipts.) Those first copies are
not even decoded: the intake knows them by their hash.

Three gateways on a real 3-node NATS cluster; the intake of gw0, which
serves the devices, is held back until gw1 and gw2 have committed and gw0
has finalised every transaction; receipts are counted per transaction on
the cluster."""

from __future__ import annotations

import asyncio

from gateway.cluster import link
from gateway.cluster.intake import Delivery, IntakeCopies
from shared import tx as txm
from tests.cluster.procs import Receipts
from tests.cluster.quorum import AUTHORITY, DOMAIN, Running, config, make_dirs, until
from tests.cluster.test_replica import chain_ids, until_settled
from tests.support.gwtest import Device
from tests.support.nats import run


def hold_intake(r: Running, release: asyncio.Event,
                fetched: list[Delivery]) -> asyncio.Event:
    """Make r's intake loop fetch nothing until `release` (what it fetches
    after goes into `fetched` too); the returned event is set once a fetch
    has gone through the hold (none started before it can still be in
    flight)."""
    intake = r.rep.intake
    fetch = intake.fetch
    held = asyncio.Event()

    async def slow(batch: int = 256, timeout: float = 1.0, **kw):
        if not release.is_set():
            held.set()
            try:
                await asyncio.wait_for(release.wait(), timeout)
            except TimeoutError:
                return []
        got = await fetch(batch, timeout, **kw)
        fetched.extend(got)
        return got

    intake.fetch = slow  # type: ignore[method-assign]
    return held


def test_a_gateway_whose_intake_lags_the_log_answers_each_tx_once(tmp_path, nats_cluster):
    devices = [Device(f"once-{i}", DOMAIN) for i in range(9)]
    dirs = make_dirs(tmp_path, devices)
    gws = [Running(config(d, i, nats_cluster)) for i, d in enumerate(dirs)]
    mine = [d for d in devices if gws[0].rep.serves(d.id)]
    assert mine, "no device served by gw0"
    txs = [d.reading(300 + n) for d in mine for n in range(4)]
    ids = [txm.decode(m).id for m in txs]

    async def body():
        for r in gws:
            await r.start()
        release = asyncio.Event()
        nc = await link.connect(nats_cluster.urls)
        try:
            fetched: list[Delivery] = []
            await asyncio.wait_for(hold_intake(gws[0], release, fetched).wait(), 10)
            heard = Receipts(AUTHORITY[1])
            await heard.listen(nc)
            await nc.flush()
            for m in txs:
                await gws[1].rep.intake.submit(m)
            # gw1 and gw2 commit them; gw0 follows the log, finalises, answers
            await until(lambda: set(ids) <= set(chain_ids(gws[0]))
                        and gws[0].final_height() >= 0 and all(t in heard.ok for t in ids),
                        gws, 30, "every tx final on gw0 and answered")
            assert not gws[0].rep.proposed  # its intake brought nothing yet
            release.set()  # now gw0's intake brings the same txs: first copies
            await until_settled(gws[0], 30)
            await until(lambda: gws[0].rep.unsettled == 0, gws, 30, "gw0 settled")
            assert gws[0].gw.counters.resent_receipts == 0, "first copies answered again"
            # and settled undecoded: the intake knew they were committed
            assert sorted(d.tx_id for d in fetched) == sorted(ids)
            assert all(d.committed and d.tx is None for d in fetched)
            # a device's resend of a committed tx: answered with the stored receipt
            await gws[1].rep.intake.submit(txs[0])
            await until(lambda: heard.ok.get(ids[0]) == 2, gws, 30, "the resend answered")
            # and a new tx of a device gw0 serves, answered (after all of the above,
            # on gw0's one MQTT connection)
            new = mine[0].reading(999)
            await gws[1].rep.intake.submit(new)
            await until(lambda: txm.decode(new).id in heard.ok, gws, 30, "a new tx answered")
            assert heard.bad == 0, heard.why
            assert gws[0].gw.counters.resent_receipts == 1
            assert {t: heard.ok[t] for t in ids} == {t: 2 if t == ids[0] else 1 for t in ids}
            assert heard.ok[txm.decode(new).id] == 1
        finally:
            release.set()
            await nc.close()
            for r in gws:
                await r.stop()
    run(body)


def copy_of(tx: bytes, deliveries: int = 1) -> Delivery:
    return Delivery(tx, b"sender", 1, deliveries, None)  # type: ignore[arg-type]


def test_intake_copies_tell_a_resend_from_a_first_copy_or_a_redelivery():
    c = IntakeCopies(bound=4)
    # read, then committed: a later copy is a resend, a redelivery is not
    c.read(txm.tx_id(b"a"))
    c.committed([txm.tx_id(b"a")])
    assert c.is_resend(copy_of(b"a"))
    assert not c.is_resend(copy_of(b"a", deliveries=2))
    # committed before the intake brought it: the first copy is not a resend,
    # the next one is
    c.committed([txm.tx_id(b"b")])
    assert not c.is_resend(copy_of(b"b"))
    assert c.is_resend(copy_of(b"b"))
    # bounded: of 6 committed ahead of the intake, the 2 oldest are forgotten
    # (their first copies count as resends: answered once more)
    ahead = [bytes([i]) for i in range(6)]
    c.committed([txm.tx_id(x) for x in ahead])
    assert [c.is_resend(copy_of(x)) for x in ahead] == [True, True] + [False] * 4
    # reads that no block takes (refused) are forgotten beyond the bound too
    for i in range(10):
        c.read(txm.tx_id(b"refused %d" % i))
    c.committed([txm.tx_id(b"refused 9")])  # the newest read is still known
    assert c.is_resend(copy_of(b"refused 9"))
