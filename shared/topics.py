"""MQTT topic names (MQTT 3.1.1) shared by firmware and gateway.

device_hex is the device id as 32 lowercase hex characters.

Frugality: a light node loads this module, so it holds only the three topics a
device uses. The gateway's topics (blocks, rejects, offers, data) and
is_domain_name live in shared/topics_gateway.py and are still reachable here
(topics.blocks, ...), loaded on first use so a board never pays heap for them.
"""

from shared import lazy

PREFIX = "tl/"


def tx(domain):
    return PREFIX + domain + "/tx"


def rx(domain, device_hex):
    return PREFIX + domain + "/dev/" + device_hex + "/rx"


def status(domain, device_hex):
    return PREFIX + domain + "/dev/" + device_hex + "/status"


def firmware(domain, board):
    """Retained firmware announcements for one board profile (docs/OTA.md);
    a release's chunks are under it (shared/ota.py chunk_topic)."""
    return PREFIX + domain + "/fw/" + board


__getattr__ = lazy("shared.topics_gateway", globals())
