# MQTTClient with two brokers (ARGS: the second broker's port): publishes
# "hb-N" (QoS 1) on PREFIX/up every 200 ms whatever the connection state,
# subscribes PREFIX/down, moves to the other broker when its broker dies
# (firmware/mqtt.py `servers`), stops on "stop" on PREFIX/down.
import time

from fwenv import connected, elapsed, env

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

c = MQTTClient(cid, host, port, keepalive=5, timeout=2, backoff_base_ms=200,
               backoff_max_ms=800, max_unacked=64)
c.servers.append((host, int(args[0])))
state = {"stop": False}


def cb(topic, msg, retained):
    print("GOT %s" % msg.decode())
    if msg == b"stop":
        state["stop"] = True


def on_connect(sp):
    print("UP port=%d reconnects=%d failures=%d resent=%d pending=%d"
          % (c.servers[c._srv][1], c.reconnects, c.failures, c.resent, c.pending()))


def on_disconnect(exc):
    print("DOWN pending=%d" % c.pending())


c.set_callback(cb)
c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.subscribe(prefix + "/down", 1)
connected(c)
print("READY")
t0 = time.ticks_ms()
last = t0 - 1000
i = 0
while not state["stop"] and elapsed(t0) < 40000:
    if time.ticks_diff(time.ticks_ms(), last) >= 200:
        last = time.ticks_ms()
        i += 1
        online = c.is_connected()
        c.publish(prefix + "/up", "hb-%d" % i, qos=1)
        print("PUB hb-%d %s" % (i, "online" if online else "offline"))
    c.wait_msg(50)
t1 = time.ticks_ms()
while c.pending() and elapsed(t1) < 5000:
    c.wait_msg(100)
print("DONE last=%d pending=%d" % (i, c.pending()))
c.disconnect()
