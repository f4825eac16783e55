"""How firmware/node.py's Node acts on the gateway's rejections (MicroPython
only; tests/test_under_micropython.py runs it under a plain board's heap):
the real Node, wallet and flash outbox, a fake MQTT client that hands over
what the test queues and records what the node publishes, and the clock
driven by the test (step(now)). firmware/mqtt.py is not loaded (the client
is a fake): the test signs its rejections in the heap that leaves.

- Only a rejection sealed by the domain authority counts: an unsigned one,
  one sealed by another key, or one about another tx with the same seq
  leaves the transaction in the outbox.
- A rejection with a retry hint (mempool-full, rate-limited) keeps the
  transaction: nothing is sent until the hold ends (at least the hint,
  doubling on each refused round, bounded), then the outbox goes out again
  oldest first, the same bytes.
- A final rejection drops it.
- After an outage the outbox goes out a few transactions at a time, as
  PUBACKs come back (the client holds each one it waits for)."""
import gc
import sys
import time
from hashlib import sha256


class _Mqtt:  # firmware/mqtt.py as the node imports it: the client here is a fake, and
    class MQTTError(Exception):  # the module's 9 KiB of heap go to the test's signing
        pass


sys.modules["firmware.mqtt"] = _Mqtt
gc.threshold(2048)  # as firmware/main.py at start-up: what the imports keep packed low
from firmware import node as fwnode  # noqa: E402
from firmware import wallet  # noqa: E402
from fwtmp import Flash  # noqa: E402
from shared import cbor, cose, messages, p256, tx  # noqa: E402

gc.threshold(-1)

AUTH = sha256(b"authority").digest()
AUTH_PUB = p256.public_key(AUTH)
AUTH_ID = tx.device_id(AUTH_PUB)
OTHER = sha256(b"someone else").digest()
T0 = 1000
M_RETRY = 12  # shared/messages_gateway.py M_RETRY
IN_FLIGHT = 4  # firmware/node.py _IN_FLIGHT


class Client:
    """The part of firmware/mqtt.py's MQTTClient the node uses."""

    def __init__(self):
        self.inbox = []
        self.sent = []  # (topic, message)
        self.cb = None
        self.tx_topic = None
        self.in_flight = None  # a count of tx publishes awaiting PUBACK, when tracked

    def set_last_will(self, *a, **k):
        pass

    def set_callback(self, cb):
        self.cb = cb

    def ensure_connected(self, ms):
        return True

    def is_connected(self):
        return True

    def subscribe(self, topic, qos):
        return qos

    def publish(self, topic, msg, qos=0, retain=False):
        self.sent.append((topic, bytes(msg)))
        if self.in_flight is not None and topic == self.tx_topic:
            self.in_flight += 1

    def pending(self):
        return self.in_flight or 0

    def check_msg(self, ms=0):
        while self.inbox:
            topic, msg = self.inbox.pop(0)
            self.cb(topic, msg, False)


class Board:
    def read_sensor(self):
        return 2150, -2, 0


def make_node():
    priv = sha256(b"board").digest()
    w = wallet.Wallet(tx.device_id(p256.public_key(priv)), priv)
    cfg = {"domain": "demo", "authority": AUTH_PUB.hex()}
    lines = []
    n = fwnode.Node(Board(), cfg, w, Client(), lines.append)
    n.registered = True  # start() sends no register
    n.start()
    n.registered = False  # step() takes no readings of its own: the tests submit them
    n.client.sent.clear()  # the status announcement comes at the first step
    return n, lines


def reading(n, value):
    return n.submit(tx.TYPE_READING, {1: value, 2: -2})


def sent_txs(n):
    out = [m for t, m in n.client.sent if t == n.tx_topic]
    n.client.sent.clear()
    return out


def rejection(n, seq, reason, retry=None, key=AUTH, tx_id=None, sealed=True):
    """A rejection of outbox entry `seq` as the gateway builds it."""
    if tx_id is None:
        tx_id = tx.tx_id(n.outbox.get(seq))
    m = {0: messages.KIND_REJECT, 1: tx_id, 2: seq, 4: reason, 11: reason}
    if retry is not None:
        m[M_RETRY] = retry
    body = cbor.dumps(m)
    m = None
    return cose.sign1(key, body, AUTH_ID) if sealed else body


def deliver(n, msg, now=None):
    n.client.inbox.append((n._rx, msg))
    gc.collect()
    if now is None:
        n.step()
    else:
        n.step(now)


def logged(lines, prefix):
    return [ln for ln in lines if ln.startswith(prefix)]


def test_only_a_rejection_sealed_by_the_authority_drops_a_transaction():
    with Flash("replies-forged"):
        n, lines = make_node()
        s = reading(n, 1)
        n.step()
        assert len(sent_txs(n)) == 1
        deliver(n, rejection(n, s, "bad-tx", sealed=False))
        assert n.outbox.get(s) is not None
        assert logged(lines, "bad-reply reason=bad-proof detail=unsigned-rejection")
        deliver(n, rejection(n, s, "bad-tx", key=OTHER))  # names the authority
        assert n.outbox.get(s) is not None
        assert logged(lines, "bad-reply reason=bad-signature")
        deliver(n, rejection(n, s, "bad-tx", tx_id=b"\x01" * 32))  # same seq, other tx
        assert len(n.outbox) == 1 and n.outbox.get(s) is not None
        assert n.rejections == 0 and not logged(lines, "rejected")
        deliver(n, rejection(n, s, "bad-tx"))  # the authority's: final
        assert logged(lines, "rejected seq=%d reason=bad-tx" % s)
        assert len(n.outbox) == 0 and n.rejections == 1


def test_a_retryable_rejection_keeps_the_transaction_and_holds_the_outbox():
    with Flash("replies-retry"):
        n, lines = make_node()
        s1, s2 = reading(n, 1), reading(n, 2)
        first = [n.outbox.get(s1), n.outbox.get(s2)]
        n.step(T0)
        assert sent_txs(n) == first
        n.client.inbox.append((n._rx, rejection(n, s1, "mempool-full", retry=1000)))
        n.client.inbox.append((n._rx, rejection(n, s2, "mempool-full", retry=1000)))
        n.step(T0 + 10)  # one hold for the refused round: >= the hint, jitter <= 1/4
        assert len(logged(lines, "retry seq=")) == 2 and len(n.outbox) == 2
        s3 = reading(n, 3)  # signed while held: waits behind the refused ones
        n.step(T0 + 1009)
        assert sent_txs(n) == []
        n.step(T0 + 10 + 1250)
        assert sent_txs(n) == first + [n.outbox.get(s3)]  # the same bytes, oldest first


def test_the_backoff_doubles_up_to_a_bound():
    with Flash("replies-backoff"):
        n, lines = make_node()
        s = reading(n, 1)
        now = T0
        n.step(now)
        holds = []
        for _ in range(7):
            assert len(sent_txs(n)) == 1
            del lines[:]  # (the heap: signing the rejections here costs the test)
            deliver(n, rejection(n, s, "rate-limited", retry=300), now + 1)
            assert logged(lines, "retry seq=%d reason=rate-limited" % s), lines
            holds.append(n._backoff)
            hold = n._hold
            assert time.ticks_diff(hold, now + 1) <= n._backoff + n._backoff // 4
            now = hold
            n.step(now)  # the hold ends: sent again
        assert holds == [500, 1000, 2000, 4000, 8000, 16000, 16000], holds
        assert len(n.outbox) == 1



def test_the_outbox_goes_out_a_few_at_a_time():
    # after an outage the whole outbox is due: only IN_FLIGHT await a PUBACK
    # at once (the client holds each), the rest go as PUBACKs come back
    with Flash("replies-inflight"):
        n, lines = make_node()
        for i in range(10):
            reading(n, i)
        n.client.tx_topic, n.client.in_flight = n.tx_topic, 0
        n.step(T0)
        assert len(sent_txs(n)) == IN_FLIGHT
        n.step(T0 + 1)
        assert sent_txs(n) == []  # no PUBACK yet: nothing more
        n.client.in_flight = 0  # the PUBACKs came
        n.step(T0 + 2)
        assert len(sent_txs(n)) == IN_FLIGHT
