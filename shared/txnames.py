"""Names of the transaction types, for people: log lines, CLI output, metric
labels (the host side of the TYPE_* codes of shared/tx.py and
shared/txdecode.py; a board never loads this module, so the names cost it no
heap). Each name is spelled here once; tests/shared/test_txnames.py checks
that every TYPE_* code has exactly one name."""
from shared import txdecode as _d

NAMES = {
    _d.TYPE_REGISTER: "register",
    _d.TYPE_READING: "reading",
    _d.TYPE_TRANSFER: "transfer",
    _d.TYPE_CLAIM: "claim",
    _d.TYPE_OWNER_TRANSFER: "owner-transfer",
    _d.TYPE_GRANT: "grant",
    _d.TYPE_REVOKE_RIGHT: "revoke-right",
    _d.TYPE_ROTATE_KEY: "rotate-key",
    _d.TYPE_RETIRE: "retire",
    _d.TYPE_RECOVER: "recover",
    _d.TYPE_NODE_JOIN: "node-join",
    _d.TYPE_NODE_ASSIGN: "node-assign",
    _d.TYPE_OFFER: "offer",
    _d.TYPE_WITHDRAW: "withdraw",
    _d.TYPE_DEMAND: "demand",
    _d.TYPE_CLOSE: "close",
    _d.TYPE_CONTRACT_CALL: "contract-call",
    _d.TYPE_CONTRACT_ADMIN: "contract-admin",
    _d.TYPE_PROOF: "proof",
    _d.TYPE_REPORT: "report",
    _d.TYPE_MFR_REGISTER: "mfr-register",
    _d.TYPE_DEVICE_RECORD: "device-record",
    _d.TYPE_VALSET: "valset",
    _d.TYPE_FIRMWARE: "firmware",
    _d.TYPE_CLIENT_CREATE: "client-create",
    _d.TYPE_CLIENT_UPDATE: "client-update",
    _d.TYPE_SEND: "xdomain-send",
    _d.TYPE_RELAY: "xdomain-relay",
    _d.TYPE_XPURCHASE: "xdomain-purchase",
}

CODES = {n: c for c, n in NAMES.items()}

UNKNOWN = "unknown-type"


def name(code):
    """The type's name; a code no type has (a future or malformed tx) reads
    "unknown-type-<code>", never a bare number."""
    n = NAMES.get(code)
    return n if n is not None else "%s-%s" % (UNKNOWN, code)
