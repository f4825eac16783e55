"""Transactions: the signed payload schema, shared by firmware and gateway.

A transaction is a COSE_Sign1 (shared/cose.py) whose protected `kid` is the
sender's device id and whose payload is a canonical CBOR map with integer keys
(integer keys keep a signed one-value reading under 120 bytes):

    1 type    int   (TYPE_* below)
    2 domain  text  chain id, also the MQTT topic segment
    3 seq     int   per-sender, strictly increasing (replay protection)
    4 fee     int   >= 0
    5 body    map   type-specific, checked by the gateway's validator

`from` is the protected kid (16 bytes = SHA-256(birth pubkey)[:16]).
The transaction id is SHA-256 of the whole COSE_Sign1 bytes. Parsing and
schema checks: shared/txdecode.py. Frugality (see shared/__init__.py): a board
only builds transactions, so this module holds just that; every name of
txdecode (decode, Tx, the TYPE_* codes a board never sends, ...) is still
reachable here (tx.decode, tx.TYPE_CLAIM), loaded on first use.
"""
from hashlib import sha256

from shared import cbor, cose, lazy

K_TYPE = 1
K_DOMAIN = 2
K_SEQ = 3
K_FEE = 4
K_BODY = 5

TYPE_REGISTER = 1  # body {1: pubkey (SEC1 compressed, 33 bytes)}
TYPE_READING = 2  # body {1: value int, 2: decimal scale int, 3: channel int (optional)}
# The other type codes (transfer, identity lifecycle, registry) are sent by
# people's tools and checked by the gateway: shared/txdecode.py lists them all.

ID_LEN = 16


def device_id(public_key_compressed):
    """Device id of a (birth) public key: SHA-256(pubkey)[:16]."""
    return sha256(public_key_compressed).digest()[:ID_LEN]


def tx_id(message):
    return sha256(message).digest()


def payload(type_, domain, seq, fee, body):
    return cbor.dumps({K_TYPE: type_, K_DOMAIN: domain, K_SEQ: seq, K_FEE: fee, K_BODY: body})


def make(private_key, sender, type_, domain, seq, fee, body):
    """Signed transaction bytes (COSE_Sign1)."""
    return cose.sign1(private_key, payload(type_, domain, seq, fee, body), sender)


__getattr__ = lazy("shared.txdecode", globals())
