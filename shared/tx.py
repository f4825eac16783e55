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
The transaction id is SHA-256 of the whole COSE_Sign1 bytes.
"""
from hashlib import sha256

from shared import cbor, cose, errors, topics

K_TYPE = 1
K_DOMAIN = 2
K_SEQ = 3
K_FEE = 4
K_BODY = 5

TYPE_REGISTER = 1  # body {1: pubkey (SEC1 compressed, 33 bytes)}
TYPE_READING = 2  # body {1: value int, 2: decimal scale int, 3: channel int (optional)}
TYPE_TRANSFER = 3  # body {1: to device id (16 bytes), 2: amount int > 0}

# Identity lifecycle (docs/IDENTITY.md): domain chain
TYPE_CLAIM = 4
TYPE_OWNER_TRANSFER = 5
TYPE_GRANT = 6
TYPE_REVOKE_RIGHT = 7
TYPE_ROTATE_KEY = 8
TYPE_RETIRE = 9
TYPE_RECOVER = 10
TYPE_NODE_JOIN = 11
TYPE_NODE_ASSIGN = 12
# public registry chain
TYPE_MFR_REGISTER = 20
TYPE_DEVICE_RECORD = 21


ID_LEN = 16
MAX_SEQ = (1 << 63) - 1
MAX_AMOUNT = (1 << 63) - 1


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


def _int_in(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class Tx:
    """A structurally valid, not yet signature-checked transaction."""

    __slots__ = ("message", "sign1", "type", "domain", "sender", "seq", "fee", "body", "_id")

    def __init__(self, message, sign1, fields):
        self.message = bytes(message)
        self.sign1 = sign1
        self.sender = sign1.kid
        self.type = fields[K_TYPE]
        self.domain = fields[K_DOMAIN]
        self.seq = fields[K_SEQ]
        self.fee = fields[K_FEE]
        self.body = fields[K_BODY]
        self._id = None

    @property
    def id(self):
        if self._id is None:
            self._id = tx_id(self.message)
        return self._id

    def verify(self, public_key):
        """Raise errors.SignatureError unless signed by `public_key`."""
        cose.check1(public_key, self.sign1)


def decode(message):
    """Parse and schema-check a transaction. Raises TooLarge, DecodeError,
    CoseError or TxError (each with a reason code); never verifies the signature."""
    if len(message) > cbor.MAX_SIZE:
        raise errors.TooLarge("too-large")
    s1 = cose.parse1(message)
    if len(s1.kid) != ID_LEN:
        raise errors.TxError("bad-sender")
    fields = cbor.loads(s1.payload)
    if not isinstance(fields, dict) or len(fields) != 5:
        raise errors.TxError("bad-fields")
    for k in (K_TYPE, K_DOMAIN, K_SEQ, K_FEE, K_BODY):
        if k not in fields:
            raise errors.TxError("missing-field")
    if not _int_in(fields[K_TYPE], 0, 0xFFFF):
        raise errors.TxError("bad-type")
    if not topics.is_domain_name(fields[K_DOMAIN]):
        raise errors.TxError("bad-domain")
    if not _int_in(fields[K_SEQ], 1, MAX_SEQ):
        raise errors.TxError("bad-seq")
    if not _int_in(fields[K_FEE], 0, MAX_AMOUNT):
        raise errors.TxError("bad-fee")
    if not isinstance(fields[K_BODY], dict):
        raise errors.TxError("bad-body")
    return Tx(message, s1, fields)
