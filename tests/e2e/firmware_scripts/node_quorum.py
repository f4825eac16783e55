# The light node's receipt check under a validator set (docs/CONSENSUS.md):
# the real firmware/node.py Node with a fake MQTT client, in the flash folder
# given as working directory. Called as:
#   micropython node_quorum.py ROOT BUILD CONFIG_JSON RECEIPTS
# RECEIPTS: records of 2-byte big-endian length + receipt bytes, made by the
# test for the board's first transaction (seq 1). Prints every log line of
# the node ("LOG ..."), "STATE receipts=R seq1=0|1" (seq 1 still in the outbox) after each receipt and
# "FREE min=N": the lowest free heap after a receipt check (collected).
import gc
import sys

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
gc.threshold(2048)  # as firmware/main.py at start-up
import json  # noqa: E402

from firmware import node as fwnode  # noqa: E402 - it loads firmware/mqtt.py, as on a board
from firmware import wallet  # noqa: E402
from shared import tx  # noqa: E402


class Client:
    def __init__(self):
        self.inbox = []
        self.cb = None

    def set_last_will(self, *a, **k):
        pass

    def set_callback(self, cb):
        self.cb = cb

    def ensure_connected(self, ms):
        return True

    def pending(self):

        return 0


    def is_connected(self):
        return True

    def subscribe(self, topic, qos):
        return qos

    def publish(self, topic, msg, qos=0, retain=False):
        pass

    def check_msg(self, ms=0):
        while self.inbox:
            topic, msg = self.inbox.pop(0)
            self.cb(topic, msg, False)


class Board:
    def read_sensor(self):
        return 2150, -2, 0


def log(line):
    print("LOG " + line)


with open(sys.argv[3]) as f:
    cfg = json.load(f)
w = wallet.load_or_create()
n = fwnode.Node(Board(), cfg, w, Client(), log)
cfg = None
n.registered = True
n.start()
n.registered = False
s = n.submit(tx.TYPE_READING, {1: 1, 2: -2})
print("TX seq=%d id=%s" % (s, tx.tx_id(n.outbox.get(s)).hex()))
gc.threshold(-1)
gc.collect()
n.step()
low = None
with open(sys.argv[4], "rb") as f:
    while True:
        h = f.read(2)
        if not h:
            break
        msg = f.read(h[0] << 8 | h[1])
        n.client.inbox.append((n._rx, msg))
        msg = None
        gc.collect()
        n.step()
        gc.collect()
        free = gc.mem_free()
        low = free if low is None or free < low else low
        print("STATE receipts=%d seq1=%d" % (n.receipts, n.outbox.get(s) is not None))
print("FREE min=%d" % low)
