"""The host side's error types, with their reason codes (the wire codes stay in
shared/reasons.py and shared/errors.py). Contract errors stay with the standalone
VM (gateway/contracts/errors.py), which imports only shared/."""

from __future__ import annotations

from shared import errors
from shared.reasons import MEMPOOL_FULL, RATE_LIMITED

# ---- raised by gateway/node/config.py

class FieldError(ValueError):
    """A value in a hand-edited file is wrong; `key` names the field and
    `problem` says what is wrong with it."""

    label = "field"

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{self.label} {key!r}: {problem}")


class ConfigError(FieldError):
    """A configuration value is wrong."""

    label = "config key"


# ---- raised by gateway/node/ratelimit.py

class RateLimited(errors.TLError):
    reason = RATE_LIMITED


# ---- raised by gateway/node/mempool.py

class MempoolFull(errors.TLError):
    reason = MEMPOOL_FULL


# ---- raised by gateway/ledger/validate.py

class DomainError(errors.TLError):
    """The transaction names another domain (chain id)."""

    reason = errors.WRONG_DOMAIN


# ---- raised by gateway/ledger/state.py

class RuleError(errors.TLError):
    """A transaction that cannot be included in the current state."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason, reason)


# ---- raised by gateway/ledger/genesis.py

class GenesisError(FieldError):
    """The genesis file (or authority key) is wrong."""

    label = "genesis"


# ---- raised by gateway/broker/credentials.py

class FileAccessError(ValueError):
    """A named owner or group that does not exist, or that this user may not
    give the files to."""


# ---- raised by gateway/registry/params.py

class RegistryError(ValueError):
    """The registry cannot be opened or used as asked; `reason` is a stable
    code (not-initialized, exists, bad-genesis, genesis-mismatch, read-only)
    and `detail` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (": " + detail if detail else ""))


class BlockRefused(RegistryError):
    """A registry block from the network not taken (gateway/registry/forks.py):
    `reason` says why (too-large, bad-block, known-block, genesis-mismatch,
    low-work, time-in-future, bad-target, bad-pow, bad-tx, ...)."""


# ---- raised by gateway/db/verify.py

class ChainError(errors.TLError):
    """A verification failure at block `height`."""

    def __init__(self, height: int, reason: str, detail: str = "") -> None:
        self.height = height
        super().__init__(detail, reason)

    def __str__(self) -> str:
        where = "database file" if self.height == FILE else "height %d" % self.height
        return "%s: %s%s" % (where, self.reason,
                                     " (%s)" % self.detail if self.detail else "")


# ---- reason codes of the store (gateway/db/store.py) and of chain verification
# (gateway/db/verify.py)
COMMIT_FAILED = "commit-failed"  # gateway/db/store.py: SQLite could not write a block

GENESIS_MISMATCH = "genesis-mismatch"
EMPTY_CHAIN = "empty-chain"
MISSING_BLOCK = "missing-block"
BAD_HEADER_SIGNATURE = "bad-header-signature"
HEADER_MISMATCH = "header-mismatch"
BAD_HEADER = "bad-header"
BAD_PREV_HASH = "bad-prev-hash"
TIME_BACKWARDS = "time-backwards"
BAD_ROW = "bad-row"
TX_ID_MISMATCH = "tx-id-mismatch"
BAD_TX = "bad-tx"
TX_ROW_MISMATCH = "tx-row-mismatch"
RECEIPT_MISMATCH = "receipt-mismatch"
TX_ROOT_MISMATCH = "tx-root-mismatch"
RECEIPTS_ROOT_MISMATCH = "receipts-root-mismatch"
RECEIPT_TREE_MISMATCH = "receipt-tree-mismatch"
STATE_ROOT_MISMATCH = "state-root-mismatch"
STATE_MISMATCH = "state-mismatch"
DATABASE_CORRUPT = "database-corrupt"
BAD_CERTIFICATE = "bad-certificate"  # a block's commit certificate does not finalise it
NO_CERTIFICATE = "no-certificate"  # a block below the head with no certificate
FILE = -1  # ChainError.height of a problem of the database file, not of a block


# ---- raised by gateway/db/store.py

class StoreError(Exception):
    """The database refuses an operation; `reason` is a stable code
    (not-next, bad-prev, genesis-mismatch, not-initialized, read-only,
    schema-mismatch; COMMIT_FAILED: SQLite could not write a block, e.g.
    disk full or an I/O error, the detail carries SQLite's own message;
    STATE_ROOT_MISMATCH: at start-up the stored state is not the head
    block's)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (": " + detail if detail else ""))


# ---- raised by gateway/market/node/streams.py

class StreamError(errors.TLError):
    """The stream store refuses a reading or a query; `reason` is one of
    wrong-agreement, conflict, stream-full, value-range, bad-batch."""

    reason = "stream"


# ---- raised by gateway/market/node/analytics.py

class DerivedServiceError(FieldError):
    """A derived service's configuration is wrong; `key` names the field."""

    label = "derived service"



# ---- raised by gateway/web/ (the dashboard's read-only HTTP API, docs/API.md)
BAD_QUERY = "bad-query"  # a malformed id, prefix or parameter: HTTP 400
NOT_FOUND = "not-found"  # well-formed, but no such block, tx or device: HTTP 404


class WebError(ValueError):
    """A request the dashboard refuses; `reason` is BAD_QUERY or NOT_FOUND,
    `detail` the message shown to the client."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")

    @property
    def http_status(self) -> int:
        return 404 if self.reason == NOT_FOUND else 400


# ---- raised by gateway/cluster/ (docs/CONSENSUS.md, "Replication over NATS JetStream")

class ClusterError(errors.TLError):
    """The replicated log, the signature channel or the intake refuses an entry
    or an operation; `reason` is one of the codes below."""

    reason = "cluster"

    WRONG_LAST_SEQ = "wrong-last-seq"  # lost the race: another entry is the last one now
    TOO_LARGE = "too-large"  # over the stream's entry limit
    GARBAGE = "garbage"  # not an entry of this kind (empty, undecodable, wrong fields)
    UNAVAILABLE = "unavailable"  # no stream leader answered within the bound
    REFUSED = "refused"  # the server refused it for another reason (in detail)
    NOT_IN_SET = "not-in-set"  # a signature by a key outside the validator set
    BAD_SIGNATURE = "bad-signature"  # the injected verification said no
    STALE = "stale"  # a signature for a height already final (replayed)
    EQUIVOCATION = "equivocation"  # one signer, one height, two header hashes

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail, reason)
