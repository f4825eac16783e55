"""The market operator's issuer of a replicated domain
(gateway/cluster/issuer.py) on a real NATS server:

- the compare-and-set on the operator subject: two gateways both believing
  they issue, both read the subject at the same point and sign the same
  seq; the second append is refused (wrong-last-seq), the second gateway
  drops what it signed, reads the subject again and signs from the next
  seq; a transaction signed before that re-read is never appended; the
  subject holds one transaction per seq, and every gateway's intake
  consumer delivers them, a stranger's message on that subject refused;
- the lease: one holder at a time, the other takes it only once it lapsed
  (or at once when handed back, or when the holder's last will said
  offline)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from gateway.cluster import link
from gateway.cluster.intake import TxIntake
from gateway.cluster.issuer import IssuerLease, OperatorIssuer
from gateway.errors import ClusterError
from gateway.market.node.analytics import DerivedService
from gateway.market.node.service import Operator
from gateway.node.service import Gateway
from shared import reasons
from shared import tx as txm
from tests.cluster.quorum import config, make_dirs
from tests.support.gwtest import Device, key
from tests.support.nats import run

DOMAIN = "issuer-test"
AUTHORITY = key("issuer-authority")
OP_ID = txm.device_id(AUTHORITY[1])


class Chain:
    """The head state as the issuer reads it: the authority's last committed seq."""

    def __init__(self, last_seq: int = 0) -> None:
        self.last_seq = last_seq

    def get(self, pid: bytes) -> Any:
        return SimpleNamespace(last_seq=self.last_seq) if pid == OP_ID else None


class MarketStub:
    def __init__(self) -> None:
        self.op = Operator(AUTHORITY[0], DOMAIN, lambda m: None)
        self.issuing = False
        self.taken_over: list[list[Any]] = []
        self.in_flight: list[list[Any]] = []

    def take_over(self, state: Any, pending: list[Any]) -> None:
        self.taken_over.append(pending)

    def grants_pending(self, txs: list[Any]) -> None:
        self.in_flight.append(txs)


def issuer(js, chain: Chain, lines: list[str]) -> OperatorIssuer:
    m = MarketStub()
    i = OperatorIssuer(js, DOMAIN, None, m, lambda: chain, lambda pid: None,
                       lambda tid: False, lambda: [], lines.append)
    m.op.submit = i.submit
    return i


async def op_subject(js) -> list[txm.Tx]:
    """The transactions on the operator subject, in stream order."""
    out, seq = [], 0
    while True:
        try:
            m = await js.get_msg(link.intake_stream(DOMAIN), seq + 1,
                                 next=True, subject=link.operator_subject(DOMAIN))
        except Exception:  # noqa: BLE001 - NotFoundError: no more
            return out
        seq = int(m.seq)
        out.append(txm.decode(bytes(m.data)))


def test_second_issuer_is_refused_and_reads_again(nats_server):
    async def body():
        nc = await link.connect(nats_server.urls)
        try:
            js = nc.jetstream()
            intake = TxIntake(js, DOMAIN, "reader", replicas=1, operator=OP_ID)
            await intake.ensure()
            chain = Chain(last_seq=4)  # four operator txs committed before
            la: list[str] = []
            lb: list[str] = []
            a, b = issuer(js, chain, la), issuer(js, chain, lb)
            await a.take()
            await b.take()
            assert a.market.issuing and b.market.issuing and a.next == b.next == 5
            who = Device("payee", DOMAIN).id
            ma = a.op.send(chain, txm.TYPE_TRANSFER, {1: who, 2: 7})
            mb = b.op.send(chain, txm.TYPE_TRANSFER, {1: who, 2: 9})
            assert txm.decode(ma).seq == txm.decode(mb).seq == 5  # signed, not appended yet
            await a.flush()
            try:
                await b.flush()
            except ClusterError as e:
                assert e.reason == ClusterError.WRONG_LAST_SEQ
            else:
                raise AssertionError("the second append after the same entry was written")
            assert b.conflicts == 1 and not b.synced and not b.queue
            assert any("another gateway appended" in x for x in lb)
            assert b.submit(mb) is None  # dropped: not appended later either
            await b.sync()
            assert b.next == 6 and b.op.seq == 5  # after the seq a appended
            assert b.submit(mb) is None  # signed before the re-read: never appended
            mb2 = b.op.send(chain, txm.TYPE_TRANSFER, {1: who, 2: 9})
            assert txm.decode(mb2).seq == 6
            await b.flush()
            # a, behind now, is refused in its turn and catches up the same way
            a.op.send(chain, txm.TYPE_TRANSFER, {1: who, 2: 11})
            try:
                await a.flush()
            except ClusterError as e:
                assert e.reason == ClusterError.WRONG_LAST_SEQ
            else:
                raise AssertionError("a appended after an entry it had not read")
            await a.sync()
            a.op.send(chain, txm.TYPE_TRANSFER, {1: who, 2: 11})
            await a.flush()
            got = await op_subject(js)
            assert [t.seq for t in got] == [5, 6, 7]  # one tx per seq, increasing
            assert [t.body[2] for t in got] == [7, 9, 11]
            assert {t.sender for t in got} == {OP_ID}
            # a stranger on the operator subject: refused by the intake
            stranger = Device("stranger", DOMAIN)
            await js.publish(link.operator_subject(DOMAIN),
                             stranger.transfer(who, 1), stream=intake.stream)
            got_ids = []
            while len(got_ids) < 3:
                ds = await intake.fetch(16, timeout=2.0)
                assert ds or intake.refused, "nothing delivered"
                got_ids += [txm.decode(d.data).seq for d in ds]
                await intake.settle(ds)
                if intake.refused:
                    break
            while not intake.refused[reasons.NOT_AUTHORIZED]:
                assert await intake.fetch(16, timeout=2.0) == [], "more than the op txs"
            assert sorted(got_ids) == [5, 6, 7]
        finally:
            await nc.close()
    run(body, 60)


def test_a_new_issuer_reads_the_operator_txs_that_may_still_land(nats_server):
    """What the former issuer appended above the chain's seq (maybe not in the
    new issuer's mempool yet) is read back from the operator subject at the
    take-over, among device txs and a stranger's message, with a bounded
    number of reads, and handed to the market (its grants count as made)."""
    async def body():
        nc = await link.connect(nats_server.urls)
        try:
            js = nc.jetstream()
            intake = TxIntake(js, DOMAIN, "reader", replicas=1, operator=OP_ID)
            await intake.ensure()
            chain = Chain(last_seq=0)
            a = issuer(js, chain, [])
            await a.take()
            who, stranger = Device("payee", DOMAIN), Device("stranger", DOMAIN)
            for i in range(40):
                a.op.send(chain, txm.TYPE_TRANSFER, {1: who.id, 2: i + 1})
                await a.flush()
                await intake.submit(who.reading(2000 + i))  # device txs in between
                if i == 38:  # a stranger's on the subject: a's next append reads again
                    await js.publish(link.operator_subject(DOMAIN), stranger.transfer(who, 1),
                                     stream=intake.stream)
                    await a.sync()
                    assert a.next == 40
            # the subject's last entry a stranger's: what lies before it still counts
            await js.publish(link.operator_subject(DOMAIN), stranger.transfer(who, 2),
                             stream=intake.stream)
            chain.last_seq = 37  # 37 of them committed
            b = issuer(js, chain, [])
            reads = 0
            get_msg = js.get_msg

            async def counted(*args, **kw):
                nonlocal reads
                reads += 1
                return await get_msg(*args, **kw)
            js.get_msg = counted
            await b.take()
            assert [t.seq for t in b.in_flight] == [38, 39, 40]
            assert [t.body[2] for t in b.in_flight] == [38, 39, 40]
            assert reads <= 16, reads  # not one read per entry of the stream
            assert [t.seq for t in b.market.taken_over[-1]] == [38, 39, 40]
            assert [t.seq for t in b.market.in_flight[-1]] == [38, 39, 40]
            assert b.next == 41
            chain.last_seq = 40  # all landed: nothing in flight at the next read
            await b.sync()
            assert b.in_flight == [] and b.market.in_flight[-1] == []
        finally:
            await nc.close()
    run(body, 60)


def test_one_lease_holder_and_take_over(nats_server):
    async def body():
        nc = await link.connect(nats_server.urls)
        try:
            js = nc.jetstream()
            a = IssuerLease(js, DOMAIN, "gwa", replicas=1, lease_s=1.0, hold_s=0.6)
            b = IssuerLease(js, DOMAIN, "gwb", replicas=1, lease_s=1.0, hold_s=0.6)
            await a.ensure()
            await b.ensure()
            assert await a.step()
            assert not await b.step()
            loop = asyncio.get_running_loop()
            # while a renews, b never takes it (b's wait starts again at each renewal)
            end = loop.time() + 2.5
            while loop.time() < end:
                assert await a.step()
                assert not await b.step()
                await asyncio.sleep(0.2)  # the renewal period under test
            # a stops renewing: b takes it once the revision stayed LEASE_S
            deadline = loop.time() + 10
            while not await b.step():
                assert loop.time() < deadline, "the lapsed lease was not taken"
                await asyncio.sleep(0.1)
            assert not await a.step()
            # handed back at a clean stop: taken at the next read
            await b.release()
            assert not await b.step()
            assert await a.step()
            # the holder's last will said offline: taken at once, not after the lease
            c = IssuerLease(js, DOMAIN, "gwc", replicas=1, lease_s=60.0, hold_s=0.6,
                            offline=lambda holder: holder == "gwa")
            await c.ensure()
            assert await c.step()
            assert not await a.step()
        finally:
            await nc.close()
    run(body, 60)


def test_an_intake_made_before_the_operator_subject_is_widened(nats_server):
    """A domain's intake stream and a gateway's consumer created by an earlier
    version (the transaction subject only) take the operator subject on the
    gateway's next start."""
    async def body():
        nc = await link.connect(nats_server.urls)
        try:
            js = nc.jetstream()
            intake = TxIntake(js, DOMAIN, "old", replicas=1, operator=OP_ID)
            old = intake.stream_config()
            old.subjects = [intake.subject]
            await js.add_stream(old)
            cc = intake.consumer_config()
            cc.filter_subject = intake.subject
            await js.add_consumer(intake.stream, cc)
            await intake.ensure()
            info = await js.stream_info(intake.stream)
            assert set(info.config.subjects) == {intake.subject, intake.op_subject}
            c = await js.consumer_info(intake.stream, intake.consumer)
            assert not c.config.filter_subject
            chain = Chain()
            i = issuer(js, chain, [])
            await i.take()
            m = i.op.send(chain, txm.TYPE_TRANSFER, {1: Device("payee", DOMAIN).id, 2: 1})
            await i.flush()
            got = await intake.fetch(16, timeout=5.0)
            assert [d.data for d in got] == [m]
        finally:
            await nc.close()
    run(body, 60)


def test_a_replicated_gateway_takes_derived_services(tmp_path):
    """Derived services on a replicated gateway: taken, their readings claimed
    in the cluster before they are published (gateway/cluster/derived.py; the
    whole flow across a take-over: tests/cluster/test_replica_derived.py),
    while a lone gateway's market publishes them at once."""
    d = make_dirs(tmp_path, [])[0]
    nodes = SimpleNamespace(nodes=[SimpleNamespace(mqtt_port=1)], urls=["nats://127.0.0.1:1"])
    svc = DerivedService("avg-temp", "temperature", 4, "cC", 2, 10)
    g = Gateway(replace(config(d, 0, nodes), derived=(svc,)))  # made (not started)
    try:
        assert g.replica is not None and g.market.derived == (svc,)
        assert g.market.claims and not g.market.issuing  # until it holds the lease
    finally:
        g.market.close()
        g.reader.close()
        g.led.store.close()


def test_one_compare_and_set_append_for_the_log_and_the_operator(nats_server, monkeypatch):
    """gateway/cluster/log.append_cas is the one JetStream compare-and-set
    append: on a stream's last sequence (the proposal log) or on one subject's
    (the operator subject, other subjects of the stream moving meanwhile);
    ProposalLog.append and
    OperatorIssuer.flush both go through it."""
    from gateway.cluster import issuer as issuer_mod
    from gateway.cluster import log as log_mod
    from gateway.cluster.log import ProposalLog, append_cas

    async def body():
        nc = await link.connect(nats_server.urls)
        try:
            js = nc.jetstream()
            intake = TxIntake(js, DOMAIN, "cas", replicas=1, operator=OP_ID)
            await intake.ensure()
            stream, op = intake.stream, intake.op_subject
            first = await append_cas(js, stream, op, b"op-1", 0, per_subject=True)
            assert not first.duplicate
            try:
                await append_cas(js, stream, op, b"op-other", 0, per_subject=True)
            except ClusterError as e:
                assert e.reason == ClusterError.WRONG_LAST_SEQ
            else:
                raise AssertionError("a second append after the same subject entry")
            # another subject of the stream moves its last sequence, not the subject's
            await js.publish(intake.subject, b"a device's tx", stream=stream)
            second = await append_cas(js, stream, op, b"op-2", first.seq, per_subject=True)
            assert second.seq == first.seq + 2
            # the stream's own last sequence: the same refusal once it moved on
            plog = ProposalLog(js, DOMAIN, replicas=1)
            await plog.ensure()
            a = await plog.append(b"block-1", 0)
            try:
                await append_cas(js, plog.stream, plog.subject, b"block-x", 0)
            except ClusterError as e:
                assert e.reason == ClusterError.WRONG_LAST_SEQ
            else:
                raise AssertionError("a second block after the same entry")
            # both callers use it
            calls: list[tuple[str, bool]] = []

            async def spy(js_, stream_, subject, data, after, **kw):
                calls.append((subject, kw.get("per_subject", False)))
                return await append_cas(js_, stream_, subject, data, after, **kw)
            monkeypatch.setattr(log_mod, "append_cas", spy)
            monkeypatch.setattr(issuer_mod, "append_cas", spy)
            await plog.append(b"block-2", a.seq)
            chain = Chain()
            i = issuer(js, chain, [])
            await i.take()
            i.op.send(chain, txm.TYPE_TRANSFER, {1: Device("payee", DOMAIN).id, 2: 1})
            await i.flush()
            assert calls == [(plog.subject, False), (op, True)]
        finally:
            await nc.close()
    run(body, 60)


def test_an_unreadable_derived_tail_is_said_and_holds_back_its_stream_only():
    """A derived tail that does not decode (gateway/cluster/derived.py: garbage)
    stops its own stream, said on the console; the other streams are adopted
    and go on."""
    from gateway.cluster.derived import Tail

    bad, good = b"\x01" * 16, b"\x02" * 16

    class Tails:
        async def read(self, aid: bytes) -> Tail:
            if aid == bad:
                raise ClusterError(ClusterError.GARBAGE, "derived tail: want {...}")
            return Tail(0, 0, [], 3)

    class Supplier(MarketStub):
        claims = True

        def __init__(self) -> None:
            super().__init__()
            self.issuing = True
            self.streams = [SimpleNamespace(aid=bad, adopted=False),
                            SimpleNamespace(aid=good, adopted=False)]
            self.adopted: list[bytes] = []

        def supplies(self) -> list[Any]:
            return self.streams

        def adopt(self, aid: bytes, *args: Any) -> None:
            self.adopted.append(aid)

    lines: list[str] = []
    m = Supplier()
    i = OperatorIssuer(None, DOMAIN, None, m, lambda: Chain(), lambda pid: None,
                       lambda tid: False, lambda: [], lines.append, tails=Tails())
    i.holding = i.synced = True
    asyncio.run(i._try(i.supply()))
    assert m.adopted == [good] and i.revisions == {good: 3}
    assert [ln for ln in lines if bad.hex()[:8] in ln and "garbage" in ln]


def test_a_tail_at_its_bound_holds_the_stream_back_without_sending_it_again():
    """A claim refused before it is sent (the tail at MAX_TAIL: the chain lags
    that far behind) leaves the tail as it was: the stream waits for its
    commits, said, and is not adopted again (which would send every held
    reading to the buyer again at every other round)."""
    from gateway.cluster.derived import Tail

    aid = b"\x03" * 16

    class Tails:
        def __init__(self) -> None:
            self.reads = 0

        async def read(self, aid: bytes) -> Tail:
            self.reads += 1
            return Tail(0, 0, [], 5)

        async def write(self, *args: Any) -> int:
            raise ClusterError(ClusterError.TOO_LARGE, "derived tail of 65 readings")

    class Supplier(MarketStub):
        claims = True

        def __init__(self) -> None:
            super().__init__()
            self.issuing = True
            self.stream = SimpleNamespace(aid=aid, adopted=True, index=64, quantity=100,
                                          next_at=0.0)
            self.adopted = 0

        def supplies(self) -> list[Any]:
            return [self.stream]

        def stalled(self, s: Any, state: Any) -> bool:
            return False

        def adopt(self, *args: Any) -> None:
            self.adopted += 1

        def next_derived(self, s: Any, now: float) -> bytes:
            return b"reading"

        def tail(self, s: Any, state: Any) -> tuple[int, int, list[bytes]]:
            return 0, 0, [b"held"] * 64

    lines: list[str] = []
    m, tails = Supplier(), Tails()
    i = OperatorIssuer(None, DOMAIN, None, m, lambda: Chain(), lambda pid: None,
                       lambda tid: False, lambda: [], lines.append, tails=tails)
    i.holding = i.synced = True
    i.revisions[aid] = 5
    for _ in range(3):
        asyncio.run(i._try(i.supply()))
    assert (m.adopted, tails.reads, i.revisions) == (0, 0, {aid: 5})
    assert len([ln for ln in lines if "too-large" in ln]) == 3
