"""Start-up of the light node, run once by firmware/main.py: read config.json,
load the board adapter with its profile, open the wallet and the MQTT client,
and wire them into a Node.

main() drops this module (and boards.profile) from sys.modules once the Node
exists, so their code and data go back to the heap before the loop starts:
nothing the loop keeps refers to them.
"""
import json

from firmware import wallet
from firmware.mqtt import MQTTClient
from firmware.node import Node


def load_config(path="config.json"):
    with open(path) as f:
        cfg = json.load(f)
    for key in ("domain", "authority", "broker_host", "broker_port"):
        if key not in cfg:
            raise ValueError("config.json: missing key '%s'" % key)
    return cfg


def load_board(cfg):
    """The adapter of the board this firmware was built for, with its profile."""
    from boards.profile import ADAPTER, PROFILE

    return __import__(ADAPTER, None, None, ["Board"]).Board(PROFILE, cfg)


def make_node(log):
    cfg = load_config()
    board = load_board(cfg)
    board.network_up()
    w = wallet.load_or_create()
    # broker login (docs/IDENTITY.md §3): user = device id, password = the
    # wallet's deterministic signature over ["mqtt", domain, id]; an anonymous
    # broker ignores both
    client = MQTTClient(w.hex.encode(), cfg["broker_host"], port=int(cfg["broker_port"]),
                        user=w.hex, password=w.mqtt_password(cfg["domain"]),
                        keepalive=int(cfg.get("keepalive", 30)))
    return Node(board, cfg, w, client, log=log)
