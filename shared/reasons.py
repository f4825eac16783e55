"""Every wire reason code: the `reason` of a rejection sent on
tl/<domain>/dev/<id>/rx (and of each errors.TLError subclass).

The gateway's full table. Light nodes never load this module (see
shared/errors.py): the codes of the error classes are defined on the classes
and named here, so each code is written once. Reach these as `errors.X` or
`reasons.X`."""
from shared import errors as _e

TOO_LARGE = _e.TooLarge.reason
BAD_CBOR = _e.DecodeError.reason
BAD_COSE = _e.CoseError.reason
BAD_SIGNATURE = _e.SignatureError.reason
BAD_TX = _e.TxError.reason
BAD_PROOF = _e.ProofError.reason
BAD_KEY = _e.KeyFormatError.reason
ALREADY_REGISTERED = _e.ALREADY_REGISTERED
WRONG_DOMAIN = "wrong-domain"
UNKNOWN_DEVICE = "unknown-device"
REPLAY = "replay"
INSUFFICIENT_FUNDS = "insufficient-funds"
NOT_AUTHORIZED = "not-authorized"
# Identity lifecycle (docs/IDENTITY.md)
REVOKED = "revoked"
NOT_OWNER = "not-owner"
NOT_IN_REGISTRY = "not-in-registry"
ALREADY_OWNED = "already-owned"
# Service economy (docs/MARKET.md): market refusals, and contract failures,
# which travel as the reason of a failed call's receipt
UNKNOWN_OFFER = "unknown-offer"
UNKNOWN_AGREEMENT = "unknown-agreement"
UNKNOWN_CONTRACT = "unknown-contract"
OUT_OF_FUEL = "out-of-fuel"
REVERTED = "reverted"
BAD_VALUE = "bad-value"
# Trust (docs/TRUST.md)
BANNED = "banned"
OVER_CAP = "over-cap"
DUPLICATE = "duplicate"
# Cross-domain exchange (docs/CROSSDOMAIN.md)
UNKNOWN_DOMAIN = "unknown-domain"
CLIENT_FROZEN = "client-frozen"
CLIENT_EXPIRED = "client-expired"
UNKNOWN_PACKET = "unknown-packet"
TIMED_OUT = "timed-out"
NOT_TIMED_OUT = "not-timed-out"
# a purchase linked to an agreement of this domain (XPURCHASE agree naming it):
# the link refused, and a batch of the linked agreement not payable (yet)
BAD_LINK = "bad-link"
UNPROVEN = "unproven"
# Retryable refusals (docs/PROTOCOL.md): the gateway is busy, the message is
# good. The device keeps the same signed message and sends it again later;
# every other code is final for that message.
MEMPOOL_FULL = "mempool-full"
RATE_LIMITED = "rate-limited"
RETRYABLE = (MEMPOOL_FULL, RATE_LIMITED)
# Chain queries over MQTT (docs/PROTOCOL.md, "Chain queries"): a request the
# gateways do not answer (shared/chainquery.py QueryError)
BAD_QUERY = "bad-query"
QUERY_FAILED = "query-failed"  # the gateway could not read its store: ask again
# a requester that pinned a domain's genesis (its authority and validator
# keys) refuses a gateway (or a data folder) stating another
GENESIS_MISMATCH = "genesis-mismatch"
# Firmware updates (docs/OTA.md): shared/ota.py FirmwareError's code
BAD_FIRMWARE = "bad-firmware"
