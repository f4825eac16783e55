import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
from brokers import amqtt_broker, firmware_mpy, micropython_proc, mosquitto_broker, mosquitto_factory, paho_client  # noqa: F401,E402,I001
