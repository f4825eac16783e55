"""Cross-domain packets (docs/CROSSDOMAIN.md): the packet's wire format, the
state keys under which a domain commits packets, receipts and its light
clients, and the proof checks of a packet against a counterparty's state root.
Spelled once here for the sending domain, the receiving domain and the
relayer (host side; a board never loads it).

Packet: canonical CBOR map
    1 source domain        text (the domain that escrowed the amount)
    2 destination domain   text
    3 sequence             int >= 1, per (source, destination)
    4 sender id            16 bytes (in the source domain)
    5 recipient id         16 bytes (in the destination domain)
    6 amount               int >= 1
    7 timeout height       int >= 0 (of the destination chain; 0: none)
    8 timeout time         int >= 0 (unix s, the destination's header time; 0: none)
    9 memo                 bytes, optional (at most MAX_MEMO)
At least one of 7, 8 is set. The whole packet is at most MAX_PACKET bytes.

State keys (kv entries of the ledger state, committed by the state tree,
shared/stateproof.py, so a counterparty proves membership AND absence):
    xp <destination> 00 <seq:8>   in the source: the packet bytes while the
                                  packet is open (deleted on ack / timeout)
    xr <source> 00 <seq:8>        in the destination: the ack of a received
                                  packet (cbor [status, reason]); never deleted
    xn <destination>              in the source: the last sequence sent
    xc <counterparty>             a light client (gateway/xdomain/client.py)
    xh <counterparty> 00 <h:8>    a trusted header of the counterparty
    xf <counterparty>             the evidence that froze the client
    xq <counterparty> 00 <agreement:16>
                                  a purchase in the counterparty's market
                                  recorded here (XPURCHASE, agree)
    xd <counterparty> 00 <agreement:16> <batch:8>
                                  a delivery commitment of that purchase
                                  (XPURCHASE, deliver)
    xl <agreement:16>             the purchase recorded here that serves this
                                  domain's own agreement (XPURCHASE agree
                                  naming it): cbor([counterparty, agreement])
Domain names have no zero byte, so `<name> 00` prefixes one domain's entries.
"""
from shared import cbor, errors, stateproof
from shared.topics_gateway import is_domain_name

MAX_PACKET = 512
MAX_MEMO = 256
ID_LEN = 16
MAX_INT = (1 << 63) - 1

ACK_OK = 0
ACK_FAILED = 1

PACKET = b"xp"
RECEIPT = b"xr"
NEXT_SEQ = b"xn"
CLIENT = b"xc"
HEADER = b"xh"
FROZEN = b"xf"
PURCHASE = b"xq"
DELIVERY = b"xd"
LINK = b"xl"


def _name(domain):
    return domain.encode() + b"\x00"


def packet_key(destination, seq):
    return PACKET + _name(destination) + seq.to_bytes(8, "big")


def receipt_key(source, seq):
    return RECEIPT + _name(source) + seq.to_bytes(8, "big")


def next_seq_key(destination):
    return NEXT_SEQ + destination.encode()


def client_key(domain):
    return CLIENT + domain.encode()


def header_key(domain, height):
    return HEADER + _name(domain) + height.to_bytes(8, "big")


def headers_of(domain):
    return HEADER + _name(domain)


def frozen_key(domain):
    return FROZEN + domain.encode()


def purchase_key(counterparty, agreement):
    return PURCHASE + _name(counterparty) + agreement


def delivery_key(counterparty, agreement, batch):
    return DELIVERY + _name(counterparty) + agreement + batch.to_bytes(8, "big")


def deliveries_of(counterparty, agreement):
    return DELIVERY + _name(counterparty) + agreement


def link_key(agreement):
    return LINK + agreement


def ack(status, reason=""):
    return cbor.dumps([status, reason])


def _int(v, lo):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= MAX_INT


def encode(source, destination, seq, sender, recipient, amount, timeout_height, timeout_time,
           memo=b""):
    p = {1: source, 2: destination, 3: seq, 4: sender, 5: recipient, 6: amount,
         7: timeout_height, 8: timeout_time}
    if memo:
        p[9] = memo
    return cbor.dumps(p)


def decode(packet_bytes):
    """The packet's fields (a dict), checked; raises TooLarge / DecodeError /
    TxError (bad-packet with a detail)."""
    if not isinstance(packet_bytes, bytes):
        raise errors.TxError("bad-packet")
    if len(packet_bytes) > MAX_PACKET:
        raise errors.TooLarge("packet-too-large")
    p = cbor.loads(packet_bytes)
    if not isinstance(p, dict) or not all(k in p for k in range(1, 9)) \
            or any(k not in range(1, 10) for k in p):
        raise errors.TxError("bad-packet")
    if not (is_domain_name(p[1]) and is_domain_name(p[2])) or p[1] == p[2]:
        raise errors.TxError("bad-packet-domain")
    if not _int(p[3], 1) or not _int(p[6], 1) or not _int(p[7], 0) or not _int(p[8], 0):
        raise errors.TxError("bad-packet")
    if not p[7] and not p[8]:
        raise errors.TxError("no-timeout")
    for k in (4, 5):
        if not isinstance(p[k], bytes) or len(p[k]) != ID_LEN:
            raise errors.TxError("bad-packet")
    if 9 in p and (not isinstance(p[9], bytes) or not p[9] or len(p[9]) > MAX_MEMO):
        raise errors.TxError("bad-memo")
    return p


def timed_out(p, height, time):
    """True once the destination's chain at (`height`, `time`) is past the
    packet's timeout."""
    return bool((p[7] and height >= p[7]) or (p[8] and time >= p[8]))


def proves_packet(state_root, packet_bytes, p, proof):
    """True if `proof` shows the source's state (root) commits the packet."""
    key = packet_key(p[2], p[3])
    vh = stateproof.value_hash(cbor.dumps([key, packet_bytes]))
    return stateproof.check(state_root, stateproof.kv_key(key), vh, proof)


def proves_receipt(state_root, p, ack_bytes, proof):
    """True if `proof` shows the destination's state holds the packet's
    receipt with `ack_bytes` (None: that it holds no receipt of it)."""
    key = receipt_key(p[1], p[3])
    vh = None if ack_bytes is None else stateproof.value_hash(cbor.dumps([key, ack_bytes]))
    return stateproof.check(state_root, stateproof.kv_key(key), vh, proof)
