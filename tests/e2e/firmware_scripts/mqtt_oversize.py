# max_packet=1024: an inbound PUBLISH larger than that is skipped unallocated,
# the next ones still arrive.  Stops at the message "last".
from fwenv import env, loop_until

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

got = []


def cb(topic, msg, retained):
    got.append(msg)
    print("GOT %s len=%d" % (msg[:16].decode(), len(msg)))


c = MQTTClient(cid, host, port, keepalive=30, max_packet=1024)
c.set_callback(cb)
c.connect()
c.subscribe(prefix + "/down", 1)
print("READY")
loop_until(c, lambda: got and got[-1] == b"last", 15000)
print("DONE got=%d dropped=%d" % (len(got), c.dropped_oversize))
c.disconnect()
