"""Firmware entry point: wire the board, config, wallet and MQTT client into a
Node and run it. On a board, main.py at the flash root does
`from firmware.main import main; main()`; the unix virtual board is started
the same way with the board's flash folder as working directory and the
firmware build on sys.path (see tools/vboard.py)."""
import json

from firmware import wallet as wallet_mod
from firmware.mqtt import MQTTClient
from firmware.node import Node

CONFIG_FILE = "config.json"


def load_config(path=CONFIG_FILE):
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


def make_node(cfg, log):
    board = load_board(cfg)
    board.network_up()
    w = wallet_mod.load_or_create()
    # broker login (docs/IDENTITY.md §3): user = device id, password = the
    # wallet's deterministic signature over ["mqtt", domain, id]; an anonymous
    # broker ignores both
    client = MQTTClient(w.hex.encode(), cfg["broker_host"], port=int(cfg["broker_port"]),
                         user=w.hex, password=w.mqtt_password(cfg["domain"]),
                         keepalive=int(cfg.get("keepalive", 30)))
    return Node(board, cfg, w, client, log=log)


def main(steps=None):
    cfg = load_config()
    node = make_node(cfg, print)
    node.run(steps)

