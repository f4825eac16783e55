# CONNECT with user name, password and last will (checked byte by byte by the
# test's fake broker), one QoS 0 publish, clean DISCONNECT.
from fwenv import env

host, port, prefix, cid, args = env()
from firmware.mqtt import MQTTClient  # noqa: E402

c = MQTTClient(cid, host, port, user="u\u00e9", password=b"p" * 130, keepalive=300)
c.set_last_will(prefix + "/status", b"offline", retain=True, qos=1)
print("CONNECTED sp=%d" % c.connect())
print("PUB pid=%d" % c.publish(prefix + "/up", b"x" * 200))
c.disconnect()
print("DONE connected=%d" % c.is_connected())
