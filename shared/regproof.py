"""Light checks of the public registry chain (docs/IDENTITY.md §1), for
CPython and MicroPython: a board, a retailer's phone or a domain gateway can
check a device record it got from any registry node without trusting it.

- `check_headers(tip, headers, every, block_time_ms, limit)` extends a
  verified `Tip` (genesis or a trusted checkpoint) by registry headers: each
  one links to the previous, has the next height, a time not before the
  previous one, the target the retarget rule requires and a hash below that
  target. The returned Tip carries the cumulative work: a node can only hand
  out a header chain with as much work as was really spent on it.
- `check_record(tip, leaf, index, size, path, device_id)` checks a device's
  state leaf against the state_root of the verified tip (RFC 6962 audit
  path) and returns its fields.

So a lying node cannot forge a record (that takes the manufacturer's key, the
record is a signed transaction replayed by every full node, and the state root
is under the proof of work); it can only withhold one.

The rules here are the consensus rules: gateway/registry/pow.py re-exports
`meets`, `retarget`, `is_retarget_height` and `work`, and
gateway/registry/chain.py decodes headers with `decode_header`.
"""
from hashlib import sha256

from shared import cbor, errors, merkle

# the registry network's topics (payloads: gateway/registry/wire.py)
TOPIC_BLOCKS = "tl/registry/blocks"
TOPIC_TX = "tl/registry/tx"
TOPIC_REQ = "tl/registry/req"
RSP_PREFIX = "tl/registry/rsp/"


def req_topic(node):
    """Requests for one node (TOPIC_REQ: for every node)."""
    return TOPIC_REQ + "/" + node


def rsp_topic(client):
    """Replies to a client (or node), the `reply` of its requests."""
    return RSP_PREFIX + client

MAX_TARGET = 0xFFFFFFFFFFFFFFFF
CLAMP = 4
MFR_TAG = 0
DEVICE_TAG = 1
DOMAIN = "registry"
ID_LEN = 16
HASH_FIELDS = ("prev_hash", "tx_root", "receipts_root", "state_root")
INT_FIELDS = ("version", "height", "time", "target", "nonce")
FIELDS = ("version", "domain", "height", "prev_hash", "time", "tx_root", "receipts_root",
          "state_root", "proposer", "target", "nonce")


def meets(block_hash, target):
    """True if the hash (big-endian 256-bit) is < target * 2^192."""
    return int.from_bytes(block_hash[:8], "big") < target


def work(target):
    """Expected hashes of a block at `target` (integer): the fork-choice weight."""
    return (1 << 64) // target


def retarget(prev_target, actual_ms, expected_ms, limit):
    """New target after a window that took `actual_ms` instead of `expected_ms`."""
    if expected_ms <= 0:
        raise ValueError("expected span must be > 0")
    lo, hi = -(-expected_ms // CLAMP), expected_ms * CLAMP
    actual = min(max(actual_ms, lo), hi)
    new = prev_target * actual // expected_ms
    return max(1, min(new, limit, MAX_TARGET))


def is_retarget_height(height, every):
    return every > 0 and height > every and (height - 1) % every == 0


def decode_header(header_bytes):
    """Registry header fields from CBOR bytes, schema-checked (ProofError)."""
    h = cbor.loads(header_bytes)
    if not isinstance(h, dict) or len(h) != len(FIELDS):
        raise errors.ProofError("bad-header")
    for k in FIELDS:
        if k not in h:
            raise errors.ProofError("bad-header")
    for k in INT_FIELDS:
        v = h[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise errors.ProofError("bad-header")
    for k in HASH_FIELDS:
        if not isinstance(h[k], bytes) or len(h[k]) != 32:
            raise errors.ProofError("bad-header")
    if h["domain"] != DOMAIN or not isinstance(h["proposer"], bytes) \
            or len(h["proposer"]) != ID_LEN or not 1 <= h["target"] <= MAX_TARGET:
        raise errors.ProofError("bad-header")
    return h


class Tip:
    """A verified registry header: its height, hash, target, state root, the
    cumulative work from genesis and the times of the last headers (as many
    as the retarget rule looks back)."""

    __slots__ = ("height", "hash", "target", "state_root", "work", "times")

    def __init__(self, height, hash_, target, state_root, work_, times):
        self.height = height
        self.hash = hash_
        self.target = target
        self.state_root = state_root
        self.work = work_
        self.times = times


def genesis_tip(header_bytes):
    """The Tip of a genesis header the caller built from its genesis file."""
    h = decode_header(header_bytes)
    if h["height"] != 0:
        raise errors.ProofError("bad-header")
    return Tip(0, sha256(header_bytes).digest(), h["target"], h["state_root"],
               work(h["target"]), [h["time"]])


def checkpoint_tip(headers, first, height, hash_, every):
    """The Tip of a checkpoint the caller trusts (block `height` has hash
    `hash_`), from `headers` of heights first, first+1, ... that hold it and
    the `every` headers before it (their times feed the retarget rule).
    Work is counted from the checkpoint (0). Returns (tip, the headers after
    it). Raises ProofError bad-checkpoint."""
    i = height - first
    if i < 0 or i >= len(headers) or (every > 0 and i < every):
        raise errors.ProofError("bad-checkpoint")
    hb = headers[i]
    if sha256(hb).digest() != hash_:
        raise errors.ProofError("bad-checkpoint")
    h = decode_header(hb)
    if h["height"] != height:
        raise errors.ProofError("bad-checkpoint")
    times = [decode_header(x)["time"] for x in headers[i - every:i]] if every > 0 else []
    times.append(h["time"])
    return Tip(height, hash_, h["target"], h["state_root"], 0, times), headers[i + 1:]


def check_headers(tip, headers, every, block_time_ms, limit, now=None, drift=None):
    """Extend `tip` by `headers` (header bytes, in height order); returns a
    new Tip (`tip` unchanged). Raises ProofError: bad-header, bad-link,
    time-backwards, time-in-future (with `now` and `drift`), bad-target,
    bad-pow."""
    height, prev, target, root, total = tip.height, tip.hash, tip.target, tip.state_root, tip.work
    times = list(tip.times)
    keep = every + 1 if every > 0 else 1
    for hb in headers:
        h = decode_header(hb)
        height += 1
        if h["height"] != height or h["prev_hash"] != prev:
            raise errors.ProofError("bad-link")
        t = h["time"]
        if t < times[-1]:
            raise errors.ProofError("time-backwards")
        if now is not None and drift is not None and t > now + drift:
            raise errors.ProofError("time-in-future")
        if is_retarget_height(height, every):
            if len(times) < every + 1:
                raise errors.ProofError("bad-link")
            span = (times[-1] - times[-1 - every]) * 1000
            target = retarget(target, span, every * block_time_ms, limit)
        if h["target"] != target:
            raise errors.ProofError("bad-target")
        prev = sha256(hb).digest()
        if not meets(prev, target):
            raise errors.ProofError("bad-pow")
        total += work(target)
        root = h["state_root"]
        times.append(t)
        if len(times) > keep:
            times.pop(0)
    return Tip(height, prev, target, root, total, times)


def check_record(tip, leaf, index, size, path, device_id=None):
    """Check a device's state leaf against `tip.state_root`; returns the
    leaf's fields [1, device id, pubkey, manufacturer, model, serial,
    manufactured, warranty_end, height, tx_id]. Raises ProofError
    (bad-proof, not-device, other-device)."""
    v = _leaf(tip, leaf, index, size, path)
    if len(v) != 10 or v[0] != DEVICE_TAG:
        raise errors.ProofError("not-device")
    if not isinstance(v[2], bytes) or sha256(v[2]).digest()[:ID_LEN] != v[1]:
        raise errors.ProofError("not-device")
    if device_id is not None and v[1] != device_id:
        raise errors.ProofError("other-device")
    return v


def check_maker(tip, leaf, index, size, path, mfr_id):
    """Check a manufacturer's state leaf against `tip.state_root`; returns
    [0, id, pubkey, name, last_seq, height, tx_id]. Raises ProofError
    (bad-proof, not-manufacturer)."""
    v = _leaf(tip, leaf, index, size, path)
    if len(v) != 7 or v[0] != MFR_TAG or v[1] != mfr_id:
        raise errors.ProofError("not-manufacturer")
    return v


def _leaf(tip, leaf, index, size, path):
    if not isinstance(leaf, bytes) or not merkle.verify(leaf, index, size, path, tip.state_root):
        raise errors.ProofError("bad-proof")
    v = cbor.loads(leaf)
    if not isinstance(v, list) or not v:
        raise errors.ProofError("bad-proof")
    return v
