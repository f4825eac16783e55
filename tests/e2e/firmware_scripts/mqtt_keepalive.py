# keepalive=2, last will on PREFIX/status; stay idle IDLE_MS (only PINGREQs go
# out), then wait for one message on PREFIX/down.  ARGS: IDLE_MS
import time

from fwenv import elapsed, env, loop_until

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

got = []
c = MQTTClient(cid, host, port, keepalive=2)
c.set_callback(lambda t, m, r: got.append(m))
c.set_last_will(prefix + "/status", b"offline", retain=True, qos=1)
c.connect()
c.subscribe(prefix + "/down", 1)
print("READY")
t0 = time.ticks_ms()
while elapsed(t0) < int(args[0]):
    c.wait_msg(250)
print("IDLE ms=%d pongs=%d" % (elapsed(t0), c.pongs))
loop_until(c, lambda: got, 10000)
print("GOT %s pongs=%d" % (got[0].decode() if got else "-", c.pongs))
c.disconnect()
