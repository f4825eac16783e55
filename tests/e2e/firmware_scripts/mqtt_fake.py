# MQTTClient against the test's scripted fake broker: publishes "a" (QoS 1)
# once connected, then only reports connection events until STOP events are seen.
# ARGS: N_DOWN (stop after that many lost connections)
import time

from fwenv import connected, elapsed, env

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

c = MQTTClient(cid, host, port, keepalive=30, timeout=2, backoff_base_ms=50,
                 backoff_max_ms=100)
downs = []


def on_connect(sp):
    print("UP reconnects=%d failures=%d resent=%d pending=%d"
          % (c.reconnects, c.failures, c.resent, c.pending()))


def on_disconnect(e):
    downs.append(e)
    print("DOWN %s %d pending=%d" % (type(e).__name__, e.args[0], c.pending()))


c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.set_callback(lambda t, m, r: print("GOT %s" % m.decode()))
connected(c)
print("PUB pid=%d" % c.publish(prefix + "/up", b"a", qos=1))
t0 = time.ticks_ms()
while len(downs) < int(args[0]) and elapsed(t0) < 15000:
    c.wait_msg(50)
print("DONE downs=%d pending=%d failures=%d" % (len(downs), c.pending(), c.failures))
