# Subscribe PREFIX/down (QoS 1), print every message, stop after N.  ARGS: N
from fwenv import env, loop_until

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

n = int(args[0])
got = []


def cb(topic, msg, retained):
    got.append(msg)
    print("GOT %s %s %d" % (topic.decode(), msg.decode(), retained))


c = MQTTClient(cid, host, port, keepalive=30)
c.set_callback(cb)
c.connect()
print("READY granted=%d" % c.subscribe(prefix + "/down", 1))
loop_until(c, lambda: len(got) >= n, 15000)
print("DONE got=%d" % len(got))
c.disconnect()
