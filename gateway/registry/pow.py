"""Proof of work for the registry chain: target, retarget, mining loop.

Target. A block is valid when SHA-256(header bytes), read as a 256-bit
big-endian integer, is below `target * 2^192`. The header carries `target` as
that 64-bit quotient (the top 64 bits of the 256-bit target) because the
canonical CBOR of shared/cbor has no integers above 2^64-1. Equivalently: the
first 8 bytes of the block hash, as a big-endian integer, are < target.
`difficulty_bits` B means target 2^(64-B): about 2^B hashes per block
(B = 0 gives 2^64-1: every hash but one in 2^64 passes, for tests).

Retarget. Every `n` blocks the target is scaled by the time the last `n`
blocks took over the time they should have taken (n * block_time):
at heights h > n with (h - 1) % n == 0,

    span   = time(h-1) - time(h-1-n)     (clamped to [expected/4, expected*4])
    target(h) = target(h-1) * span / expected, kept in [1, limit]

so one step moves the difficulty at most x4 either way; `limit` is the
genesis target (blocks never get easier than genesis). Other heights keep
the previous target. Times are integer seconds (block header `time`), the
expected span is computed in milliseconds so sub-second block times work.

Mining. `solve(fields, target)` searches nonces 0, 1, 2, ... . Only the
nonce changes between attempts, so the header is encoded once per nonce
width (canonical CBOR heads are 1, 2, 3, 5 or 9 bytes) as prefix + nonce +
suffix, and each attempt is one SHA-256 of a concatenation (about 1 us in
CPython on a PC, a few us on a Raspberry Pi).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from hashlib import sha256
from typing import Any

from shared import cbor
from shared.regproof import CLAMP, MAX_TARGET, is_retarget_height, meets, retarget, work

__all__ = ["CLAMP", "MAX_TARGET", "difficulty", "header_hash", "is_retarget_height", "meets",
           "next_target", "retarget", "solve", "target_from_bits", "work"]

TARGET_SHIFT = 192
MAX_NONCE = (1 << 64) - 1

# (first nonce, last nonce, CBOR head byte or None for the 1-byte form, width)
_NONCE_CLASSES = (
    (0, 23, None, 0),
    (24, 0xFF, 0x18, 1),
    (0x100, 0xFFFF, 0x19, 2),
    (0x10000, 0xFFFF_FFFF, 0x1A, 4),
    (1 << 32, MAX_NONCE, 0x1B, 8),
)
_NONCE_KEY = cbor.dumps("nonce")


def target_from_bits(bits: int) -> int:
    """Target of about 2^bits hashes per block (bits 0..63)."""
    if not 0 <= bits <= 63:
        raise ValueError("difficulty bits must be 0..63")
    return min(1 << (64 - bits), MAX_TARGET)


def difficulty(target: int) -> float:
    """Expected hashes per block at `target`."""
    return (1 << 64) / target


def header_hash(header_bytes: bytes) -> bytes:
    return sha256(header_bytes).digest()


def next_target(height: int, prev_target: int, time_at: Callable[[int], int], every: int,
                block_time_ms: int, limit: int) -> int:
    """Target required of block `height` (>= 1), given the previous block's
    target and `time_at(h)`: the header time of an earlier block h."""
    if not is_retarget_height(height, every):
        return prev_target
    span_ms = (time_at(height - 1) - time_at(height - 1 - every)) * 1000
    return retarget(prev_target, span_ms, every * block_time_ms, limit)


def _split(fields: Mapping[str, Any], nonce: int) -> tuple[bytes, bytes, bytes]:
    """(prefix, nonce value bytes, suffix) of the header encoded with `nonce`."""
    enc = cbor.dumps(dict(fields, nonce=nonce))
    value = cbor.dumps(nonce)
    i = enc.index(_NONCE_KEY) + len(_NONCE_KEY)
    assert enc[i:i + len(value)] == value
    return enc[:i], value, enc[i + len(value):]


def solve(fields: Mapping[str, Any], target: int, *, start: int = 0,
          max_tries: int | None = None) -> tuple[int, bytes, bytes] | None:
    """Search nonces from `start` for a header (fields + nonce) whose hash
    meets `target`. Returns (nonce, header bytes, block hash), or None after
    `max_tries` attempts (or when the nonce space is exhausted)."""
    if not 1 <= target <= MAX_TARGET:
        raise ValueError("target out of range")
    bound = (target << TARGET_SHIFT).to_bytes(32, "big")
    left = MAX_NONCE + 1 if max_tries is None else max_tries
    sha = sha256
    for first, last, head, width in _NONCE_CLASSES:
        if last < start or left <= 0:
            continue
        lo = max(first, start)
        hi = min(last, lo + left - 1)
        left -= hi - lo + 1
        prefix, _, suffix = _split(fields, first)
        if head is None:
            for n in range(lo, hi + 1):
                hb = prefix + bytes((n,)) + suffix
                d = sha(hb).digest()
                if d < bound:
                    return n, hb, d
            continue
        pre = prefix + bytes((head,))
        for n in range(lo, hi + 1):
            hb = pre + n.to_bytes(width, "big") + suffix
            d = sha(hb).digest()
            if d < bound:
                return n, hb, d
    return None
