# MQTTClient through a broker restart.  Publishes "hb-N" (QoS 1) on PREFIX/up
# every 250 ms whatever the connection state, subscribes PREFIX/down and
# PREFIX/up (echo: proves the re-subscription and the delivery of the resent
# messages), stops on the message "stop" on PREFIX/down.
import time

from fwenv import connected, elapsed, env

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

c = MQTTClient(cid, host, port, keepalive=5, timeout=2, backoff_base_ms=200,
                 backoff_max_ms=800, max_unacked=32)
state = {"stop": False}


def cb(topic, msg, retained):
    print("GOT %s %s" % (topic.decode().rsplit("/", 1)[1], msg.decode()))
    if msg == b"stop":
        state["stop"] = True


def on_connect(sp):
    print("UP sp=%d reconnects=%d failures=%d resent=%d pending=%d"
          % (sp, c.reconnects, c.failures, c.resent, c.pending()))


def on_disconnect(exc):
    print("DOWN %r pending=%d" % (exc, c.pending()))


c.set_callback(cb)
c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.subscribe(prefix + "/down", 1)
c.subscribe(prefix + "/up", 1)
connected(c)
print("READY")
t0 = time.ticks_ms()
last = t0 - 1000
i = 0
while not state["stop"] and elapsed(t0) < 40000:
    if time.ticks_diff(time.ticks_ms(), last) >= 250:
        last = time.ticks_ms()
        i += 1
        online = c.is_connected()
        pid = c.publish(prefix + "/up", "hb-%d" % i, qos=1)
        print("PUB hb-%d pid=%d %s" % (i, pid, "online" if online else "offline"))
    c.wait_msg(50)
t1 = time.ticks_ms()
while c.pending() and elapsed(t1) < 5000:
    c.wait_msg(100)
print("DONE last=%d pending=%d reconnects=%d failures=%d resent=%d"
      % (i, c.pending(), c.reconnects, c.failures, c.resent))
c.disconnect()
