# The lowest free heap of a board while it checks a receipt (run by
# bench/receipt_heap.py under `micropython -X heapsize=64k`):
#   sys.argv[:] = ['', BUILD, KIND, CONFIG_JSON, RECEIPTS]; import mp_receipt_heap
# (compiled by mpy-cross, as the firmware is)
# KIND: plain, liar or market (a supplier: firmware/market.py loaded, as
# firmware/startup.py wires it). The real firmware (mpy-cross build, the real
# MQTT client object, not connected) and a Node with the board's first
# transaction (seq 1) in its outbox; RECEIPTS: records of 2-byte length +
# receipt bytes for that transaction. For each receipt, the node's own
# callback checks it while a ballast of B bytes is held; the largest B (by
# bisection, 64-byte steps) with which the check still succeeds is a lower
# bound of the free heap at the check's lowest point. Prints
# "FREE before=F low=B" per receipt (F: free heap before the check, collected).
import gc
import sys

sys.path.insert(0, sys.argv[1])
gc.threshold(2048)  # as firmware/main.py at start-up
import json  # noqa: E402

from firmware import node as fwnode  # noqa: E402
from firmware import wallet  # noqa: E402
from firmware.mqtt import MQTTClient  # noqa: E402
from shared import tx  # noqa: E402

KIND = sys.argv[2]


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


with open(sys.argv[3]) as f:
    cfg = json.load(f)
w = wallet.load_or_create()
n = fwnode.Node(Board(), cfg, w, Client(w.hex.encode(), "127.0.0.1", user=w.hex,
                                         password=w.mqtt_password(cfg["domain"])), log)
if KIND == "liar":
    from firmware.liar import equivocate

    equivocate(n)
elif KIND == "market":
    from firmware.market import Market

    n.market = Market(n, {1: "temperature", 2: "cC", 3: 5, 4: 1}, None)
cfg = None
n.registered = True
n.start()
n.registered = False
s = n.submit(tx.TYPE_READING, {1: 1, 2: -2})
stored = n.outbox.get(s)
print("TX seq=%d id=%s" % (s, tx.tx_id(stored).hex()))
gc.threshold(-1)
gc.collect()


def attempt(msg, b):
    # check msg once while about b bytes are held; True if it was verified
    had = n.receipts
    gc.collect()
    ballast = [bytes(48) for _ in range(b // 64)]  # 64 bytes each on the 64-bit port
    try:
        n._on_message(n._rx, msg, False)
    except MemoryError as e:
        if not b:
            sys.print_exception(e)
    ballast = None  # noqa: F841 - released before the collection below
    ok = n.receipts > had
    if ok:
        n.outbox.put(s, stored)
    gc.collect()
    return ok


with open(sys.argv[4], "rb") as f:
    while True:
        h = f.read(2)
        if not h:
            break
        msg = f.read(h[0] << 8 | h[1])
        gc.collect()
        free = gc.mem_free()
        if not attempt(msg, 0):
            print("FREE before=%d low=-1" % free)
            continue
        lo, hi = 0, free // 64  # passes at lo, assumed to fail at hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(msg, mid * 64):
                lo = mid
            else:
                hi = mid
        print("FREE before=%d low=%d" % (free, lo * 64))
