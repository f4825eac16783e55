"""Parsing and schema checks of transactions (the gateway's side of
shared/tx.py; also usable on a board, e.g. in tests).

`decode(message)` returns a structurally valid `Tx` or raises a typed error
with a reason code; it never verifies the signature (`Tx.verify` does)."""
from shared import cbor, cose, errors
from shared import tx as _tx
from shared.topics_gateway import is_domain_name
from shared.tx import ID_LEN, K_BODY, K_DOMAIN, K_FEE, K_SEQ, K_TYPE, tx_id

# Every transaction type code (the body of each is checked by the gateway's
# validator). The two a board sends are defined in shared/tx.py.
TYPE_REGISTER = _tx.TYPE_REGISTER  # 1
TYPE_READING = _tx.TYPE_READING  # 2
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
# service economy (docs/MARKET.md)
TYPE_OFFER = 13
TYPE_WITHDRAW = 14
TYPE_DEMAND = 15
TYPE_CLOSE = 16
TYPE_CONTRACT_CALL = 17
TYPE_CONTRACT_ADMIN = 18
# trust (docs/TRUST.md)
TYPE_PROOF = 23
TYPE_REPORT = 24
# public registry chain
TYPE_MFR_REGISTER = 20
TYPE_DEVICE_RECORD = 21
# consensus (docs/CONSENSUS.md)
TYPE_VALSET = 22  # body {1: from height, 2: threshold, 3: [pubkeys, sorted]}, by the domain owner
# firmware updates (docs/OTA.md): releases and each device's installed version
TYPE_FIRMWARE = 25
# cross-domain exchange (docs/CROSSDOMAIN.md)
TYPE_CLIENT_CREATE = 26
TYPE_CLIENT_UPDATE = 27
TYPE_SEND = 28
TYPE_RELAY = 29
TYPE_XPURCHASE = 30  # a purchase in another domain's market, recorded with proofs

MAX_SEQ = (1 << 63) - 1
MAX_AMOUNT = (1 << 63) - 1


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
    if not is_domain_name(fields[K_DOMAIN]):
        raise errors.TxError("bad-domain")
    if not _int_in(fields[K_SEQ], 1, MAX_SEQ):
        raise errors.TxError("bad-seq")
    if not _int_in(fields[K_FEE], 0, MAX_AMOUNT):
        raise errors.TxError("bad-fee")
    if not isinstance(fields[K_BODY], dict):
        raise errors.TxError("bad-body")
    return Tx(message, s1, fields)
