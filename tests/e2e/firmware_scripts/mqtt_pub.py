# Publish N messages with QoS q on PREFIX/up (one with a non-ASCII str payload),
# wait for every PUBACK, disconnect.  ARGS: QOS N
from fwenv import env, loop_until

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

qos, n = int(args[0]), int(args[1])
c = MQTTClient(cid, host, port, keepalive=30)
print("CONNECTED sp=%d" % c.connect())
for i in range(n):
    pid = c.publish(prefix + "/up", "m%d" % i if i else "m0-\u00e9t\u00e9", qos)
    print("PUB %d pid=%d pending=%d" % (i, pid, c.pending()))
loop_until(c, lambda: not c.pending(), 5000)
print("DONE pending=%d" % c.pending())
c.disconnect()
