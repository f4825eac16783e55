"""The light node's MQTT client under the name firmware/main.py imports.

Reconnecting (with backoff), re-subscribing and resending are built into
firmware/mqtt.py's MQTTClient (one class costs less heap than a subclass)."""

from firmware.mqtt import MQTTClient as RobustClient  # noqa: F401
