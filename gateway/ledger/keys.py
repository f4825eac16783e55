"""Keys of the market's and the contracts' stored values in the state tree
(State.kv). One byte names the kind; the rest is chosen so that a key-prefix
range lists what the market needs in a deterministic order.

    o <service> 00 <supplier>             an offer
    d <service> 00 <height:8> <index:4> <demand id>
                                          a waiting demand (oldest first)
    i <demand id>                         -> the waiting demand's key
    c <address>                           a contract deployment
    s <address> <cbor(storage key)>       a contract's stored value
    v                                     the schedule of validator sets
                                          (gateway/ledger/consensus.py)

Service names are a-z 0-9 '-' (no zero byte), so `<service> 00` is a prefix
of that service's entries only.
"""

from __future__ import annotations


def offers_of(service: str) -> bytes:
    return b"o" + service.encode() + b"\x00"


def offer(service: str, supplier: bytes) -> bytes:
    return offers_of(service) + supplier


def demands_of(service: str) -> bytes:
    return b"d" + service.encode() + b"\x00"


def demand(service: str, height: int, index: int, demand_id: bytes) -> bytes:
    return demands_of(service) + height.to_bytes(8, "big") + index.to_bytes(4, "big") + demand_id


def demand_index(demand_id: bytes) -> bytes:
    return b"i" + demand_id


def deployment(address: bytes) -> bytes:
    return b"c" + address


def storage(address: bytes, encoded_key: bytes) -> bytes:
    return b"s" + address + encoded_key


OFFERS = b"o"
DEMANDS = b"d"
VALSETS = b"v"
