# Subscribe PREFIX/a and PREFIX/b, print every message; "unsub" on PREFIX/b
# unsubscribes PREFIX/a; "stop" on PREFIX/b ends. Connection events are
# printed (the test restarts the broker: only PREFIX/b must come back).
import time

from fwenv import connected, elapsed, env

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

c = MQTTClient(cid, host, port, keepalive=10, timeout=2, backoff_base_ms=100,
               backoff_max_ms=400)
state = {"stop": False, "unsub": False}


def cb(topic, msg, retained):
    print("GOT %s %s" % (topic.decode().rsplit("/", 1)[1], msg.decode()))
    if msg == b"unsub":
        state["unsub"] = True
    elif msg == b"stop":
        state["stop"] = True


c.set_callback(cb)
c.on_connect = lambda sp: print("UP reconnects=%d" % c.reconnects)
c.on_disconnect = lambda e: print("DOWN")
c.subscribe(prefix + "/a", 1)
c.subscribe(prefix + "/b", 1)
connected(c)
print("READY")
t0 = time.ticks_ms()
while not state["stop"] and elapsed(t0) < 30000:
    c.wait_msg(50)
    if state["unsub"]:  # outside the callback, as firmware/market.py does
        state["unsub"] = False
        c.unsubscribe(prefix + "/a")
        print("UNSUB connected=%d" % c.is_connected())
print("DONE")
c.disconnect()
