"""The supplier's streams in firmware/market.py: signed readings, batch
commitments, concurrent agreements, against a fake node (MicroPython only;
tests/test_under_micropython.py runs it under a market board's heap)."""
from marketfakes import CONTRACT, Node, cbor, cose, ended, match, merkle, stream
from marketfakes import teardown_module  # noqa: F401 (the runner calls it)

OFFER = {1: "temperature", 2: "cC", 3: 5, 4: 2, 5: "", 6: 100, 7: 1}
A1 = b"\x11" * 16
A2 = b"\x22" * 16


def supplier():
    n = Node(OFFER, name="supplier")
    n.at(0)  # its OFFER
    return n


def test_streams_signed_readings_and_commits_every_four():
    n = supplier()
    n.notice(match(A1, 6))
    assert n.logged("match role=supplier agreement=11111111 price=5 quantity=6")
    n.at(2)
    assert n.published == []  # not before interval_s + 1 s: the buyer subscribes first
    for s in range(3, 16):
        n.at(s)
    topic = ("tl/demo/data/" + n.wallet.hex + "/" + A1.hex()).encode()  # own id/agreement
    assert [t for t, _ in n.published] == [topic] * 6
    readings = [m for _, m in n.published]
    for i, m in enumerate(readings):
        assert stream.open_reading(m, n.wallet.public_key) == (A1, i, 2151 + i, -2)
    assert n.of_type(17) == [
        {1: CONTRACT, 2: "commit", 3: [A1, 0, 0, 4, merkle.root(readings[:4])], 4: 0, 5: 20000},
        {1: CONTRACT, 2: "commit", 3: [A1, 1, 4, 2, merkle.root(readings[4:])], 4: 0, 5: 20000},
    ]
    assert len(n.logged("stream agreement=11111111")) == 6
    assert n.logged("done agreement=11111111 readings=6")
    assert n.market.slots == [None, None]


def test_a_reading_counts_only_once_published():
    n = supplier()
    n.notice(match(A1, 2, interval=1))
    n.client.up = False
    n.at(5)
    assert n.board.reads == 0  # offline: the sensor is not even read
    n.client.up = True
    n.link_ok = False
    n.at(6)
    assert n.published == [] and n.board.reads == 1
    n.link_ok = True
    n.at(7)  # what the link refused waits for the next second
    assert len(n.published) == 1
    assert stream.open_reading(n.published[0][1], n.wallet.public_key)[1] == 0


def test_commit_waits_for_room_in_the_outbox():
    n = supplier()
    n.notice(match(A1, 8, interval=1))
    n.full = True
    for s in range(2, 12):
        n.at(s)
    assert len(n.published) == 4  # the stream waits for its commit
    n.full = False
    for s in range(12, 20):
        n.at(s)
    assert [c[3][1:4] for c in n.of_type(17)] == [[0, 0, 4], [1, 4, 4]]


def test_two_agreements_at_once_a_third_refused_and_closed_and_ended_stops_one():
    n = supplier()
    n.notice(match(A1, 4, interval=1))
    n.notice(match(A2, 100, interval=1))
    n.notice(match(b"\x33" * 16, 5, interval=1))
    assert n.of_type(16) == [{1: b"\x33" * 16}]  # closed: the buyer's escrow back at once
    seq = next(q for q, t, _ in n.txs if t == 16)
    assert n.logged("match-refused agreement=33333333 reason=busy close=%d" % seq)
    n.notice(match(A1, 4, interval=1))  # told twice: one stream
    for s in range(2, 4):
        n.at(s)
    n.notice(ended(A2, 480))
    assert n.logged("ended agreement=22222222 refund=480")
    for s in range(4, 8):
        n.at(s)
    by = {A1: [], A2: []}
    for _, m in n.published:  # (signatures checked above; no heap for them here)
        r = cbor.loads(cose.parse1(m).payload)
        by[r[1]].append(r[2])
    assert by == {A1: [0, 1, 2, 3], A2: [0, 1]}
    assert [c[3][:4] for c in n.of_type(17)] == [[A1, 0, 0, 4]]  # none for the ended one
    assert n.market.slots == [None, None]


def test_a_replayed_match_starts_nothing_the_next_of_a_block_does():
    """Two MATCHes sealed at one height (an OFFER can match several waiting
    demands) are both taken; replayed, neither starts anything again, also
    after the agreement ended and after a reboot (the mark is in flash)."""
    n = supplier()
    first, second = match(A1, 1, interval=1, height=9), match(A2, 5, interval=1, height=9,
                                                                order=1)
    n.notice(first)
    n.notice(second)
    assert n.logged("match role=supplier agreement=22222222")
    for s in range(2, 4):
        n.at(s)
    assert n.logged("done agreement=11111111 readings=1")
    n.notice(ended(A2, 15, 9))  # ended after two readings
    sent = len(n.published)
    for m in (first, second):  # replayed
        n.notice(m)
    assert n.logged("match-refused agreement=11111111 reason=replay height=9")
    assert n.logged("match-refused agreement=22222222 reason=replay height=9")
    for s in range(4, 9):
        n.at(s)
    assert len(n.published) == sent == 3 and n.market.slots == [None, None]
    n = Node(OFFER, name="supplier", reboot=True)  # a new Market over the same flash
    for m in (first, second):
        n.notice(m)
    assert len(n.logged("match-refused")) == 2 and n.market.slots == [None, None], n.lines
    n.notice(match(b"\x33" * 16, 2, interval=1, height=10))  # a new one still starts
    assert n.market.slots != [None, None]


def test_told_again_after_its_own_restart_it_closes_what_it_lost():
    """After a restart the gateway tells a supplier again of its open
    agreement (a MATCH with the next index): one it streams goes on; one it
    lost with a reboot (its uncommitted readings gone) it closes, so the
    buyer is refunded at once."""
    n = supplier()
    n.notice(match(A1, 8, interval=1))
    for s in range(2, 4):
        n.at(s)
    n.notice(match(A1, 8, interval=1, resume=0))  # the gateway restarted: still streaming
    assert n.logged("resume role=supplier agreement=11111111") and n.of_type(16) == []
    n = Node(OFFER, name="supplier", reboot=True)
    n.notice(match(A1, 8, interval=1, resume=4))
    seq = next(q for q, t, _ in n.txs if t == 16)
    assert n.of_type(16) == [{1: A1}] and n.market.slots == [None, None]
    assert n.logged("match-refused agreement=11111111 reason=restarted close=%d" % seq)
