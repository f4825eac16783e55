"""Start-up of the light node, run once by firmware/main.py: read config.json,
load the board adapter with its profile, open the wallet and the MQTT client,
and wire them into a Node; when the config has an "offer" or a "need"
(docs/MARKET.md), also the bodies of its OFFER and DEMAND, from which
firmware/main.py builds the node's market part once this module is gone.

When the node left a release in ota/offer (docs/OTA.md), make_node runs the
updater (firmware/ota.py) first, before the node is even imported; it ends
with a reset.

main() drops this module (and boards.profile) from sys.modules once the Node
exists, so their code and data go back to the heap before the loop starts:
nothing the loop keeps refers to them.
"""
import json


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


def login(cfg, w):
    """Broker login (docs/IDENTITY.md §3): user = device id, password = the
    wallet's deterministic signature over ["mqtt", domain, id]; an anonymous
    broker ignores both."""
    return w.hex, w.mqtt_password(cfg["domain"])


def client(cfg, user, password):
    """The board's MQTT client."""
    from firmware.mqtt import MQTTClient

    c = MQTTClient(user.encode(), cfg["broker_host"], port=int(cfg["broker_port"]),
                   user=user, password=password, keepalive=int(cfg.get("keepalive", 30)))
    for b in cfg.get("brokers", ()):  # more endpoints [host, port]: next when one dies
        c.servers.append((b[0], int(b[1])))
    return c


def make_node(log):
    try:  # the node reset into the updater (docs/OTA.md): it runs before the node
        open("ota/offer").close()  # is even imported, and ends with a reset
    except OSError:
        pass
    else:
        from firmware import ota

        ota.main(log)
    from firmware import wallet
    from firmware.node import Node
    from shared import cbor

    cfg = load_config()
    board = load_board(cfg)
    board.network_up()
    w = wallet.load_or_create()
    node = Node(board, cfg, w, client(cfg, *login(cfg, w)), log=log)
    if cfg.get("equivocate"):  # a board misbehaving on purpose (docs/TRUST.md)
        from firmware.liar import equivocate

        equivocate(node)
    if "offer" not in cfg and "need" not in cfg:
        return node, None  # a plain board never loads the market
    # the OFFER and DEMAND bodies ({1: value of the first key, ...}, for the
    # keys given; the gateway refuses a bad field with a bad-tx naming it;
    # encoded, the market decodes one when it uses it),
    # built here so the loop keeps only them; firmware/main.py builds the
    # market part (firmware/market.py) with them once this module is gone.
    # The keys in one string each: as names they would stay interned on
    # every board. The numbers the board computes with must be integers
    # (ValueError otherwise, like a missing key in load_config).
    b = []
    for k, keys, ints in (
            ("offer", "service unit price interval_s location valid_s schema", (3, 4, 6)),
            ("need", "service max_price quantity wait_s policy location", (2, 3, 4))):
        c = cfg.get(k)
        keys = keys.split()
        d = c and {i + 1: c[n] for i, n in enumerate(keys) if c.get(n) is not None}
        for i in ints if c else ():
            if not isinstance(d.get(i), int):
                raise ValueError("config.json: %s.%s must be an integer" % (k, keys[i - 1]))
        b.append(d and cbor.dumps(d))  # kept as CBOR bytes: ~1/4 of the dict's heap
    return node, b
