"""The market node's side of a derived stream in a replicated domain
(gateway/market/node/service.py: tail, adopt; the cluster's claims are
gateway/cluster/derived.py, the whole flow tests/cluster/test_replica_derived.py):
a gateway that takes the issuer over continues a derived agreement from the
chain's committed index, the operator's commits still pending and the tail
the cluster holds, sending the held readings again with their bytes and
deriving only after them; the tail an issuer claims is every reading not
committed on its chain. And a derived service's DEMAND the chain passed by
without taking it is made again."""

from __future__ import annotations

from gateway.market.ledger import rules as ledger
from gateway.market.node.analytics import DerivedService
from gateway.market.node.service import MarketNode
from shared import merkle, stream, topics
from shared import tx as txm
from tests.support.gwtest import DOMAIN
from tests.support.mktest import Market, event

MEAN = DerivedService("temperature-mean", "temperature", window=2, unit="cC", price=2,
                      interval_s=1)


class Out:
    def __init__(self) -> None:
        self.data: list[bytes] = []  # derived readings published
        self.txs: list[bytes] = []  # operator txs submitted
        self.drop = False  # not taken (an issuer re-reading its seqs)

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic.startswith(topics.data(DOMAIN, "")):
            self.data.append(payload)

    def submit(self, msg: bytes) -> bytes | None:
        self.txs.append(msg)
        return None if self.drop else txm.tx_id(msg)


def sold(tmp_path) -> tuple[Market, bytes]:
    """The operator offers the mean; a buyer buys 12 readings of it."""
    m = Market(tmp_path / "gw", {"buyer": 1000})
    m.run(m.op.make(txm.TYPE_OFFER, {1: MEAN.name, 2: "cC", 3: 2, 4: 1, 5: "", 6: 3600, 7: 1}))
    aid = event(m.run(m.demand("buyer", MEAN.name, max_price=2, quantity=12)), "match")[1]
    return m, aid


def node_of(m: Market, tmp_path, out: Out) -> MarketNode:
    (tmp_path / "n").mkdir(exist_ok=True)
    n = MarketNode(DOMAIN, tmp_path / "n", m.node.ledger.authority_priv, out.publish,
                   out.submit, lambda line: None, derived=(MEAN,))
    n.claims = True
    n.start(m.node.state)
    return n


def readings(m: Market, aid: bytes, first: int, count: int) -> list[bytes]:
    return [stream.reading(m.op.priv, m.op.id, aid, i, 2000 + 7 * i, -2)
            for i in range(first, first + count)]


def commit(m: Market, aid: bytes, batch: int, first: int, rs: list[bytes]) -> bytes:
    return m.call(m.op, "commit", aid, batch, first, len(rs), merkle.root(rs))


def test_the_heir_sends_the_claimed_tail_again_and_derives_after_it(tmp_path):
    m, aid = sold(tmp_path)
    former = readings(m, aid, 0, 6)  # the former issuer's: 0-3 committed, 4-5 claimed
    m.run(commit(m, aid, 0, 0, former[:4]))
    assert m.agreement(aid)["next_index"] == 4
    out = Out()
    n = node_of(m, tmp_path, out)
    n.take_over(m.node.state, [], now=1.0)
    # the tail as the former issuer wrote it (its chain had not committed batch 0 yet)
    n.adopt(aid, m.node.state, 0, 0, former, [], now=1.0)
    (s,) = n.supplies()
    assert (s.index, s.first, s.batch_no, s.adopted) == (6, 4, 1, True)
    assert out.data == former[4:]  # sent again with their bytes, not derived anew
    assert n.streams.messages(aid, 4, 2) == former[4:]
    # the next one is derived from the source's mean, at index 6
    n._rolling["temperature"] = MEAN.rolling()
    n._rolling["temperature"].add(2400, -2)
    msg = n.next_derived(s, now=2.0)
    assert stream.open_reading(msg, m.op.pub)[1:] == (6, 2400, -2)
    n.emit(s, msg, m.node.state, now=2.0)
    # what the next claim holds: everything not committed on this chain
    assert n.tail(s, m.node.state) == (4, 1, [*former[4:], msg])
    msg7 = stream.reading(m.op.priv, m.op.id, aid, 7, 2400, -2)
    n.emit(s, msg7, m.node.state, now=3.0)  # batch 1 full: committed
    (c,) = [txm.decode(t) for t in out.txs if txm.decode(t).type == txm.TYPE_CONTRACT_CALL]
    assert c.body[2] == "commit"
    assert c.body[3] == [aid, 1, 4, 4, merkle.root([*former[4:], msg, msg7])]


def test_a_pending_commit_and_a_chain_behind_the_tail(tmp_path):
    m, aid = sold(tmp_path)
    former = readings(m, aid, 0, 9)
    m.run(commit(m, aid, 0, 0, former[:4]))
    out = Out()
    n = node_of(m, tmp_path, out)
    n.take_over(m.node.state, [])
    # batch 1 (4..7) committed by the former issuer, in the intake, not in a block yet
    pending = [txm.decode(commit(m, aid, 1, 4, former[4:8]))]
    n.adopt(aid, m.node.state, 4, 1, former[4:9], pending, now=1.0)
    (s,) = n.supplies()
    assert (s.index, s.first, s.batch_no) == (9, 8, 2) and out.data == [former[8]]
    # this gateway holds no reading of the batch in flight: its next claim is
    # the tail from its own batch on (contiguous), not one with a gap
    assert n.tail(s, m.node.state) == (8, 2, [former[8]])
    # a tail whose writer's chain was ahead of this one's (it held batch 1 committed)
    out.data.clear()
    n.take_over(m.node.state, [])
    n.adopt(aid, m.node.state, 8, 2, former[8:9], [], now=1.0)
    assert (s.index, s.first, s.batch_no) == (9, 8, 2) and out.data == [former[8]]
    assert not [t for t in out.txs if txm.decode(t).type == txm.TYPE_CONTRACT_CALL]


def test_a_demand_the_chain_passed_by_is_made_again(tmp_path):
    m = Market(tmp_path / "gw", {"rich": 1000, "supplier": 1000})
    m.run(m["rich"].transfer(m.op.id, 500), m.offer("supplier", "temperature", price=2))
    out = Out()
    (tmp_path / "n").mkdir()
    n = MarketNode(DOMAIN, tmp_path / "n", m.node.ledger.authority_priv, out.publish,
                   out.submit, lambda line: None, derived=(MEAN,))
    n.start(m.node.state)
    n.tick(m.node.state, 100.0)
    demands = [t for t in out.txs if txm.decode(t).type == txm.TYPE_DEMAND]
    assert len(demands) == 1
    n.tick(m.node.state, 101.0)
    assert len([t for t in out.txs if txm.decode(t).type == txm.TYPE_DEMAND]) == 1  # waits
    # the DEMAND never lands (refused where it was validated on an older head);
    # a later operator tx passes its seq
    later = max(txm.decode(t).seq for t in out.txs) + 1
    m.run(m.op.make(txm.TYPE_TRANSFER, {1: m["rich"].id, 2: 1}, seq=later))
    assert ledger.agreement(m.node.state, txm.tx_id(demands[0])[:16]) is None
    n.tick(m.node.state, 102.0)
    again = [t for t in out.txs if txm.decode(t).type == txm.TYPE_DEMAND]
    assert len(again) == 2 and txm.decode(again[1]).seq > later


def test_a_commit_that_did_not_land_is_made_again(tmp_path):
    m, aid = sold(tmp_path)
    out = Out()
    n = node_of(m, tmp_path, out)
    n.take_over(m.node.state, [])
    n.adopt(aid, m.node.state, 0, 0, [], [], now=1.0)
    (s,) = n.supplies()
    rs = readings(m, aid, 0, 4)
    for r in rs[:3]:
        n.emit(s, r, m.node.state, now=1.0)
    out.drop = True  # the issuer doubts (a failed append): its commit not taken
    n.emit(s, rs[3], m.node.state, now=1.0)
    assert not s.adopted and s.first == 4
    out.drop = False
    n.adopt(aid, m.node.state, 0, 0, rs, [], now=2.0)  # the claimed tail, as written
    commits = [txm.decode(t).body[3] for t in out.txs
               if txm.decode(t).type == txm.TYPE_CONTRACT_CALL]
    assert commits == [[aid, 0, 0, 4, merkle.root(rs)]] * 2  # the same batch again
    m.run(out.txs[-1])
    assert m.agreement(aid)["next_index"] == 4 and not n.stalled(s, m.node.state)
    # a commit taken and then dropped (the chain passes its seq without it)
    rs2 = readings(m, aid, 4, 4)
    for r in rs2:
        n.emit(s, r, m.node.state, now=3.0)
    assert s.first == 8 and s.adopted and not n.stalled(s, m.node.state)  # still pending
    m.run(m.op.make(txm.TYPE_TRANSFER, {1: m["buyer"].id, 2: 1}, seq=s.commit_seq))
    assert n.stalled(s, m.node.state) and not s.adopted


def test_a_commit_still_pending_at_adoption_is_not_taken_for_stalled(tmp_path):
    """Adopted over the former issuer's commit still in the intake: the stream
    waits for that commit's block, it is not adopted again (and its held
    readings sent again) at every round meanwhile; once the chain passes the
    commit's seq without taking it, it is."""
    m, aid = sold(tmp_path)
    former = readings(m, aid, 0, 9)
    m.run(commit(m, aid, 0, 0, former[:4]))
    out = Out()
    n = node_of(m, tmp_path, out)
    n.take_over(m.node.state, [])
    ctx = txm.decode(commit(m, aid, 1, 4, former[4:8]))  # in flight, not in a block
    n.adopt(aid, m.node.state, 4, 1, former[4:9], [ctx], now=1.0)
    (s,) = n.supplies()
    assert (s.first, s.adopted) == (8, True)
    assert not n.stalled(s, m.node.state) and s.adopted
    m.run(m.op.make(txm.TYPE_TRANSFER, {1: m["buyer"].id, 2: 1}, seq=ctx.seq))  # passed by
    assert n.stalled(s, m.node.state) and not s.adopted
