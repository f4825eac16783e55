"""The buyer role of firmware/market.py: demands paced by the balance, and
the check of every bought reading, against a fake node (MicroPython only;
tests/test_under_micropython.py runs it under a market board's heap)."""
from marketfakes import Node, account, ended, key, match, messages, stream, tx
from marketfakes import teardown_module  # noqa: F401 (the runner calls it)

NEED = {1: "temperature", 2: 5, 3: 4, 4: 600, 5: "cheapest", 6: "u4pr"}
A1 = b"\x11" * 16


def buyer():
    return Node(need=NEED, name="buyer", fee=1)  # a DEMAND needs 5 x 4 + 1


def test_demands_once_the_balance_covers_it_and_again_when_free():
    n = buyer()
    n.at(0)
    assert n.txs == []  # no balance known yet
    n.notice(account(20, 3))
    n.at(1)
    assert n.lines == ["balance=20 height=3"] and n.txs == []
    n.notice(account(21, 4))
    n.at(2)
    assert n.of_type(15) == [NEED]
    demand = tx.tx_id(n.get(1))[:16]  # the agreement id to come
    assert n.market.dem == (demand, 1) and n.market.bal == 0
    assert n.logged("demand service=temperature agreement=%s quantity=4 seq=1"
                    % demand.hex()[:8])
    n.notice(account(100, 5))
    n.at(3)
    assert len(n.of_type(15)) == 1  # one open demand at a time
    n.notice(ended(demand, 21))  # it waited in vain: ready again
    assert n.logged("ended agreement=%s refund=21" % demand.hex()[:8])
    n.at(4)
    assert len(n.of_type(15)) == 2 and n.market.bal == 79
    n.market.notice({0: 2, 2: 2, 4: "insufficient-funds"})  # the gateway refused it
    assert n.market.dem is None
    n.at(5)
    assert len(n.of_type(15)) == 3
    n.notice(account(3, 6))
    n.notice(match(n.market.dem[0], 4, role="buyer"))  # matched: no demand open now
    assert n.market.dem is None
    n.notice(account(1000, 7))
    n.at(6)
    assert len(n.of_type(15)) == 3  # buying already


def test_buys_verified_readings_and_refuses_the_rest():
    priv, pub = key("supplier")
    sid = tx.device_id(pub)
    n = buyer()
    n.notice(match(A1, 3, role="buyer", supplier_key=pub))
    assert n.logged("match role=buyer agreement=11111111 price=5 quantity=3")
    topic = ("tl/demo/data/" + "aa" * 16 + "/" + A1.hex()).encode()  # supplier/agreement
    assert n.market.data(b"tl/demo/dev/" + b"ab" * 16 + b"/rx", b"") is False  # the node's
    assert n.market.notice({0: 1, 2: 7}) is False  # a receipt: the node's
    n.market.data(topic, stream.reading(priv, sid, A1, 0, 2150, -2))
    assert not n.logged("bought")  # not subscribed yet: step() subscribes
    n.at(0)
    assert n.client.subs == [topic] and n.logged("listen agreement=11111111 granted=1")

    def give(m, where=topic):
        n.lines.clear()
        n.market.data(where, m)
        return n.lines

    good = stream.reading(priv, sid, A1, 0, 2150, -2)
    assert give(good) == ["bought agreement=11111111 index=0 value=2150 scale=-2"]
    bad = bytearray(stream.reading(priv, sid, A1, 1, 2151, -2))
    bad[-1] ^= 1
    assert give(bytes(bad)) == ["bad-reading agreement=11111111 reason=bad-signature"]
    # a forged reading is reported on chain (docs/TRUST.md), once per agreement,
    # by the buyer's next pass (signed in the check, it needed more heap)
    assert n.of_type(24) == []
    n.at(0)
    assert n.of_type(24) == [{1: b"\xaa" * 16, 2: "forged-message", 3: bytes(bad)}]
    other, _ = key("someone else")
    assert give(stream.reading(other, sid, A1, 1, 2151, -2)) == [
        "bad-reading agreement=11111111 reason=bad-signature"]
    assert give(stream.reading(priv, sid, b"\x22" * 16, 1, 1, -2)) == [
        "bad-reading agreement=11111111 reason=agreement"]
    assert give(good) == ["bad-reading agreement=11111111 reason=index"]  # again
    assert give(stream.reading(priv, sid, A1, 3, 1, -2)) == [
        "bad-reading agreement=11111111 reason=index"]  # beyond the quantity
    assert give(b"\xd2\x84garbage") == ["bad-reading agreement=11111111 reason=bad-cbor"]
    assert len(n.of_type(24)) == 1  # reported once; not for a stale index or garbage
    assert give(good, b"tl/demo/data/" + b"aa" * 16 + b"/" + b"22" * 16) == []  # not ours
    assert give(stream.reading(priv, sid, A1, 2, 2152, -2)) == [
        "bought agreement=11111111 index=2 value=2152 scale=-2"]  # 1 was lost: a gap
    assert n.client.unsubs == []
    n.at(1)
    assert n.client.unsubs == [topic] and n.market.slots == [None, None]
    assert n.lines[-1].startswith("done agreement=11111111 readings=3 free=")


def test_a_refused_subscription_counts_the_readings_once_the_client_has_it():
    """A broker whose rights follow the chain (a NATS node reloading its file
    after the block) may refuse the bought stream's topic at first. The MQTT
    client keeps a refused filter and asks again itself (firmware/mqtt.py,
    tests/e2e/test_mqtt_client.py): the market listens from its first ask, so a
    reading that comes once the client's own ask was granted counts (it used to
    be dropped until the market's next pass asked again)."""
    priv, pub = key("supplier")
    sid = tx.device_id(pub)
    n = buyer()
    n.client.refuse = 1
    n.notice(match(A1, 3, role="buyer", supplier_key=pub))
    topic = ("tl/demo/data/" + "aa" * 16 + "/" + A1.hex()).encode()
    n.at(0)
    assert n.client.subs == [topic] and n.logged("listen agreement=11111111 granted=128")
    n.market.data(topic, stream.reading(priv, sid, A1, 0, 2150, -2))
    assert n.logged("bought agreement=11111111 index=0 value=2150 scale=-2")
    n.at(3)
    assert n.client.subs == [topic]  # the client asks again, not the market


def test_ended_agreement_unsubscribes():
    _, pub = key("supplier")
    n = buyer()
    n.notice(match(A1, 3, role="buyer", supplier_key=pub))
    n.at(0)
    n.notice(ended(A1, 15))
    n.at(1)
    assert n.client.unsubs == n.client.subs and n.market.slots == [None, None]
    assert messages.KIND_ENDED == 5 and n.logged("done agreement=11111111 readings=0")


def test_a_replayed_match_is_refused_after_a_reboot_too_and_the_buyer_keeps_buying():
    """A replayed sealed MATCH of an agreement that ended would hold the buyer
    in a purchase that never comes (it demands only when not buying): the
    board refuses a MATCH not newer than the newest it acted on, by the
    (height, order) it was sealed at, kept in flash across a reboot."""
    priv, pub = key("supplier")
    sid = tx.device_id(pub)
    n = buyer()
    n.notice(account(100, 3))
    n.at(0)
    a = n.market.dem[0]
    refused = "match-refused agreement=%s reason=replay height=4" % a.hex()[:8]
    old = match(a, 1, role="buyer", supplier_key=pub, height=4)
    n.notice(old)
    n.at(1)
    topic = n.client.subs[0]
    n.market.data(topic, stream.reading(priv, sid, a, 0, 2150, -2))
    n.at(2)
    assert n.logged("done agreement=") and n.market.slots == [None, None]
    n.notice(account(79, 5))
    n.notice(old)  # replayed
    assert n.lines[-1] == refused and n.market.slots == [None, None]
    n.at(3)
    assert len(n.of_type(15)) == 2  # still buying
    n = Node(need=NEED, name="buyer", fee=1, reboot=True)  # power cycled
    n.notice(old)  # replayed again: the mark is in flash
    assert n.lines == [refused] and n.market.slots == [None, None], n.lines
    n.notice(account(79, 6))
    n.at(0)
    assert len(n.of_type(15)) == 1 and n.market.slots == [None, None]  # buys again
    n.notice(match(n.market.dem[0], 2, role="buyer", supplier_key=pub, height=6))
    assert n.market.slots != [None, None], n.lines  # a new MATCH is taken
    n = Node(need=NEED, name="buyer", fee=1, reboot=True, authority=b"\x03" + b"\x5a" * 32)
    n.notice(old)  # a new chain (another authority): the old mark is not its
    assert n.market.slots != [None, None], n.lines


def test_told_again_after_a_restart_it_listens_from_the_next_index():
    priv, pub = key("supplier")
    sid = tx.device_id(pub)
    n = buyer()
    n.notice(match(A1, 6, role="buyer", supplier_key=pub, resume=4))
    assert n.logged("resume role=buyer agreement=11111111 price=5 quantity=6")
    n.at(0)
    topic = n.client.subs[0]
    n.market.data(topic, stream.reading(priv, sid, A1, 3, 2150, -2))
    assert n.lines[-1] == "bad-reading agreement=11111111 reason=index"  # committed already
    n.market.data(topic, stream.reading(priv, sid, A1, 4, 2151, -2))
    assert n.lines[-1] == "bought agreement=11111111 index=4 value=2151 scale=-2"


def test_a_purchase_whose_ended_went_missing_ends_at_its_expiry():
    """An ENDED sent while the board was offline is lost (clean session): the
    buyer keeps an agreement at most for the seconds the MATCH said were left
    before its expiry (by its own clock), then demands again."""
    _, pub = key("supplier")
    n = buyer()
    n.notice(account(100, 3))
    n.at(0)
    n.notice(match(n.market.dem[0], 4, role="buyer", supplier_key=pub, left=10))
    n.at(9)
    assert n.client.subs and n.client.unsubs == [] and len(n.of_type(15)) == 1
    n.at(10)
    assert n.client.unsubs == n.client.subs and n.market.slots == [None, None]
    assert [ln for ln in n.lines if ln.startswith("done ") and " readings=0 " in ln]
    assert len(n.of_type(15)) == 2  # buying again (79 left of its balance of 100)
