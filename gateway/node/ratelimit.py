"""Per-sender rate limit of the gateway's ingress: a token bucket per sender.

Each sender's bucket holds up to `burst` tokens and refills at `rate` tokens
per second of the gateway's clock (monotonic). A transaction the gateway does
work for (admitted to the mempool, or a resend answered with its stored
receipt) takes one token; with less than one token left the sender's next
message is refused with the retryable reason `rate-limited` (shared/reasons.py:
the device retries the same signed message later). So one sender never gets
more than `burst` transactions at once and `rate` per second sustained,
whatever it sends.

Tokens are taken only for messages whose signature was verified, so nobody can
drain another device's bucket by sending under its id; a message arriving
while its sender's bucket is already empty is refused before its signature is
checked (the refusal costs the gateway no verification). `rate <= 0` switches
the limit off. Senders in `exempt` (the gateway's own authority key, whose
market verdicts go through the same ingress) are never limited.

Memory: one small entry per sender seen; entries whose bucket has refilled
are dropped when the table has grown (a full bucket is the same as none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from gateway.errors import RateLimited

PRUNE_AT = 4096  # table size that triggers dropping the senders with a full bucket


class SenderLimit:
    def __init__(self, rate: float, burst: int, exempt: Iterable[bytes] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.exempt = frozenset(exempt)
        self.clock = clock
        self.refused = 0
        # sender -> [tokens, clock time of `tokens`]
        self._buckets: dict[bytes, list[float]] = {}
        self._prune_at = PRUNE_AT

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _tokens(self, b: list[float], now: float) -> float:
        return min(self.burst, b[0] + (now - b[1]) * self.rate)

    def check(self, sender: bytes) -> None:
        """Raise RateLimited if `sender` has less than one token now."""
        if self.rate <= 0 or sender in self.exempt:
            return
        b = self._buckets.get(sender)
        if b is not None and self._tokens(b, self.clock()) < 1.0:
            self.refused += 1
            raise RateLimited("per-sender")

    def take(self, sender: bytes) -> None:
        """Take one token from `sender`'s bucket (it may go below one: the
        next `check` refuses until it has refilled)."""
        if self.rate <= 0 or sender in self.exempt:
            return
        now = self.clock()
        b = self._buckets.get(sender)
        if b is None:
            self._buckets[sender] = [self.burst - 1.0, now]
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
        else:
            b[0] = self._tokens(b, now) - 1.0
            b[1] = now

    def _prune(self, now: float) -> None:
        full = [s for s, b in self._buckets.items() if self._tokens(b, now) >= self.burst]
        for s in full:
            del self._buckets[s]
        self._prune_at = max(PRUNE_AT, 2 * len(self._buckets))

    def __len__(self) -> int:
        """Senders currently tracked."""
        return len(self._buckets)
