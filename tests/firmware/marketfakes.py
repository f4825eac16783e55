"""A fake Node around firmware/market.py for the market tests (MicroPython
only): records log lines, transactions (signed by a real wallet, as the
outbox holds them), publishes, subscriptions; time is driven by the test.
Its imports load most of the firmware: like firmware/main.py at start-up,
they run with gc.threshold, so what they keep is packed low in the small
heap and the tests still find free runs for their signatures."""
import gc
import os
import time
from hashlib import sha256

gc.threshold(2048)
from firmware import wallet  # noqa: E402
from firmware import market  # noqa: E402
from shared import cbor, cose, merkle, messages, p256, stream, topics, tx  # noqa: E402, F401

gc.threshold(-1)

DOMAIN = "demo"
CONTRACT = b"\xcc" * 16
AUTHORITY = b"\x02" + b"\xa5" * 32
FLASH = "build/fwtest-market-" + os.urandom(4).hex()  # the boards' flash: <FLASH>/<name>
os.mkdir(FLASH)
_sealed = [0]  # notices numbered as the gateway seals them: each MATCH newer than the last


# notices as shared/messages_gateway.py builds them (not imported: it would
# cost the tests the heap the signatures need)
def match(agreement, quantity, interval=2, role="supplier", supplier_key=b"\x02" + b"\x01" * 32,
          height=None, order=0, resume=None, left=1000):
    if height is None:
        _sealed[0] += 1
        height = _sealed[0]
    m = {0: 3, 20: agreement, 21: b"\xbb" * 16, 22: b"\xaa" * 16, 23: supplier_key,
         24: "temperature", 25: 5, 26: quantity, 27: interval, 28: 1000, 29: CONTRACT,
         30: role, 6: height, 33: order, 35: left}
    if resume is not None:
        m[34] = resume
    return cbor.dumps(m)


def account(balance, height):
    return cbor.dumps({0: 4, 31: balance, 6: height})


def ended(agreement, refund, height=0):
    return cbor.dumps({0: 5, 20: agreement, 32: refund, 6: height})


def key(name):
    """A fixed key pair (private, public) named by `name`."""
    priv = sha256(name.encode()).digest()
    return priv, p256.public_key(priv)


def make_wallet(name):
    priv, pub = key(name)
    return wallet.Wallet(tx.device_id(pub), priv)


def teardown_module():
    """Remove the boards' flash (tests/mpy_runner.py calls it after a module's
    tests; a test module imports it from here)."""
    from fwtmp import _rmtree

    _rmtree(FLASH)


class Client:
    def __init__(self):
        self.up = True
        self.subs = []
        self.unsubs = []
        self.refuse = 0  # subscriptions to refuse (SUBACK 0x80) before granting

    def is_connected(self):
        return self.up

    def subscribe(self, topic, qos):
        self.subs.append(topic)
        if self.refuse:
            self.refuse -= 1
            return 0x80
        return qos

    def unsubscribe(self, topic):
        self.unsubs.append(topic)


class Board:
    def __init__(self):
        self.value = 2150
        self.reads = 0

    def read_sensor(self):
        self.reads += 1
        self.value += 1
        return self.value, -2, 0


class Node:
    """What Market uses of firmware/node.py's Node."""

    def __init__(self, offer=None, need=None, name="board", fee=0, reboot=False,
                 authority=AUTHORITY):
        """A board named `name` with its own flash (the market's mark file):
        fresh, or as it was left (reboot=True: a new Market over the same flash)."""
        self.domain = DOMAIN
        self.authority = authority
        market.MARK = FLASH + "/" + name
        if not reboot:
            try:
                os.remove(market.MARK)
            except OSError:
                pass
        self.tx_topic = "tl/" + DOMAIN + "/tx"  # as firmware/node.py builds it
        self.fee = fee
        self.registered = True
        self.wallet = make_wallet(name)
        self.client = Client()
        self.board = Board()
        self.lines = []
        self.txs = []  # (seq, type, body)
        self.published = []  # (topic, message)
        self.link_ok = True
        self.outbox = self
        self.full = False
        # the bodies firmware/startup.py builds from config.json, encoded as it
        # hands them over (checked by tests/e2e/test_firmware_market.py)
        # (the part is the module itself, its state set again: one board at a time)
        self.market = market.Market(self, offer and cbor.dumps(offer),
                                    need and cbor.dumps(need))
        self.t0 = self.market.tk

    # Node
    def log(self, line):
        self.lines.append(line)

    def submit(self, type_, body):
        if self.full:
            return None
        seq = len(self.txs) + 1
        self.txs.append((seq, type_, body))
        return seq

    def _send(self, topic, msg, retain):
        if self.link_ok:
            self.published.append((topic, msg))
        return self.link_ok

    # Outbox
    def get(self, seq):  # signed when asked: the tests keep only the bodies
        seq, type_, body = self.txs[seq - 1]
        return self.wallet.sign_tx(type_, DOMAIN, seq, self.fee, body)

    # test helpers
    def at(self, second):
        """The node's passes at `second` seconds after the market was built:
        the market's step, again while it asks for another pass (it signs
        at most once per pass) and the last one did something (logged,
        submitted or published); at most 8."""
        now = time.ticks_add(self.t0, second * 1000)
        for _ in range(8):
            done = len(self.lines) + len(self.txs) + len(self.published)
            self.market.step(now)
            if not self.market.go or done == len(self.lines) + len(self.txs) + len(self.published):
                break

    def notice(self, raw):
        """A notice as the node hands it over: parsed with views into the bytes."""
        self.market.notice(messages.parse(raw, False))

    def of_type(self, type_):
        return [body for _, t, body in self.txs if t == type_]

    def logged(self, prefix):
        return [ln for ln in self.lines if ln.startswith(prefix)]
