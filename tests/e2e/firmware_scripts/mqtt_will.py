# Retained last will "offline" on PREFIX/status, "online" published there, then
# idle until killed (bounded: exits by itself after 30 s).
from fwenv import env, loop_until

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

c = MQTTClient(cid, host, port, keepalive=10)
c.set_last_will(prefix + "/status", b"offline", retain=True, qos=1)
c.connect()
c.publish(prefix + "/status", b"online", qos=1, retain=True)
loop_until(c, lambda: not c.pending(), 5000)
print("READY pending=%d" % c.pending())
loop_until(c, lambda: False, 30000, 500)
print("TIMEOUT")
