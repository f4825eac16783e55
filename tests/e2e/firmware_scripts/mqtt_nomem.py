# Out of heap while an inbound message is handled (MemoryError, here from the
# callback; on a board from the packet's read): the client drops the
# connection, whose stream may be cut mid-packet, connects again and gets the
# next message.  ARGS: none
from fwenv import env, loop_until

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

got = []
ups = []


def cb(topic, msg, retained):
    if msg == b"boom":
        print("NOMEM")
        raise MemoryError("memory allocation failed")
    got.append(msg)
    print("GOT %s" % msg.decode())


c = MQTTClient(cid, host, port, keepalive=30, backoff_base_ms=50)
c.set_callback(cb)
c.on_connect = ups.append
c.connect()
print("READY granted=%d" % c.subscribe(prefix + "/down", 1))
if loop_until(c, lambda: len(ups) >= 2 and c.sock, 15000):
    print("RECONNECTED granted=%d" % c.subscribe(prefix + "/down", 1))
loop_until(c, lambda: got, 15000)
print("DONE got=%d" % len(got))
c.disconnect()
