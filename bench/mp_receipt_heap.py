# The lowest free heap of a board while it checks a receipt (run by
# bench/receipt_heap.py under `micropython -X heapsize=64k`):
#   sys.argv[:] = ['', KIND, CONFIG_JSON, RECEIPTS]; import mp_receipt_heap
# (compiled by mpy-cross, as the firmware is, and found on sys.path as the boot
# file, firmware/otaboot.py, left it)
# KIND: plain, updated (plain, sys.path and ota/state as after an update), liar or market (a supplier: firmware/market.py loaded, as
# firmware/startup.py wires it). The real firmware (mpy-cross build, the real
# MQTT client object, not connected) and a Node with the board's first
# transaction (seq 1) in its outbox; RECEIPTS: records of 2-byte length +
# receipt bytes for that transaction. For each receipt, the node's own
# callback checks it while a ballast of small objects is held; the most heap
# a ballast took (gc.mem_free before and after making it) with which the check
# still succeeded (bisection on the count) is a lower bound of the free heap
# at the check's lowest point. Prints "FREE before=F low=B" per receipt (F:
# free heap before the check, collected; low=-1: the check fails unburdened).
import gc
import sys

gc.threshold(2048)  # as firmware/main.py at start-up
import json  # noqa: E402

from firmware import node as fwnode  # noqa: E402
from firmware import wallet  # noqa: E402
from firmware.mqtt import MQTTClient  # noqa: E402
from shared import tx  # noqa: E402

KIND = sys.argv[1]


class Board:
    def read_sensor(self):
        return 2150, -2, 0


class Client(MQTTClient):  # the real client object (its buffers), never connected
    def ensure_connected(self, ms):
        return True

    def is_connected(self):
        return True

    def subscribe(self, topic, qos):
        return qos

    def publish(self, topic, msg, qos=0, retain=False):
        pass

    def check_msg(self, ms=0):
        pass


def log(line):
    if not line.startswith("receipt-verified"):
        print("LOG " + line)


with open(sys.argv[2]) as f:
    cfg = json.load(f)
w = wallet.load_or_create()
n = fwnode.Node(Board(), cfg, w, Client(w.hex.encode(), "127.0.0.1", user=w.hex,
                                         password=w.mqtt_password(cfg["domain"])), log)
if KIND == "liar":
    from firmware.liar import equivocate

    equivocate(n)
elif KIND == "market":
    from firmware.market import Market

    # an OFFER body, as a dict: firmware/startup.py hands the market its CBOR
    # bytes (~250 B less), but bytes built here would cost every kind's row
    n.market = Market(n, {1: "temperature", 2: "cC", 3: 5, 4: 1}, None)
cfg = None
# as firmware/main.py after start-up: shared/topics.py forgotten (the node
# keeps its topics as strings)
sys.modules.pop("shared.topics")
sys.modules["shared"].__dict__.pop("topics")
n.registered = True
n.start()
n.registered = False
s = n.submit(tx.TYPE_READING, {1: 1, 2: -2})
stored = n.outbox.get(s)
print("TX seq=%d id=%s" % (s, tx.tx_id(stored).hex()))
gc.threshold(-1)
gc.collect()


def attempt(msg, n_items):
    # check msg once while a ballast of n_items small objects is held; returns
    # the heap the ballast took (bytes) if the check succeeded, else None
    had = n.receipts
    gc.collect()
    before = gc.mem_free()
    try:
        ballast = [None] * n_items
        for i in range(n_items):
            ballast[i] = bytes(16)  # 2 blocks: fills any hole
        taken = before - gc.mem_free()
        n._on_message(n._rx, msg, False)
    except MemoryError as e:
        if not n_items:
            sys.print_exception(e)
    ballast = None  # noqa: F841 - released before the collection below
    ok = n.receipts > had
    if ok:
        n.outbox.put(s, stored)
    gc.collect()
    return taken if ok else None


with open(sys.argv[3], "rb") as f:
    while True:
        h = f.read(2)
        if not h:
            break
        msg = f.read(h[0] << 8 | h[1])
        gc.collect()
        free = gc.mem_free()
        if attempt(msg, 0) is None:
            print("FREE before=%d low=-1" % free)
            continue
        lo, hi, low = 0, free // 32, 0  # passes with lo items, assumed to fail with hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            taken = attempt(msg, mid)
            if taken is None:
                hi = mid
            else:
                lo, low = mid, taken
        print("FREE before=%d low=%d" % (free, low))
