"""Several brokers of one domain, tried in turn (docs/CROSSDOMAIN.md,
"Relayer"): a domain's NATS nodes, or the brokers of two gateways of the
domain. A tool's connection to a domain (tools/mqtt_ask.Line: its chain
queries, tools/remote_store.QueryClient, its submissions, tools/submit.submit,
and its subscriptions) keeps to the broker that answered last and moves to
the next one when that broker's gateway does not answer in time, its
connection drops or it cannot be reached; a broker that failed is tried
again once the others have failed too. `first` tries each broker in turn
for one attempt.

Trying another broker is safe for what is asked: a chain query reads, and a
transaction sent again is the same transaction (same sender and seq), which
a chain commits at most once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from gateway.broker.embedded import parse_url

T = TypeVar("T")

MAX_BROKERS = 8


class Brokers:
    """An ordered list of broker URLs and the one to try first (thread-safe).
    Built from one URL, a comma-separated list (the CLI's form) or a sequence;
    ValueError names a URL that is not mqtt://host:port."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        items = urls.split(",") if isinstance(urls, str) else list(urls)
        out: list[str] = []
        for u in (x.strip() for x in items):
            if not u:
                raise ValueError("an empty broker URL in %r" % (urls,))
            parse_url(u)
            if u not in out:
                out.append(u)
        if not out:
            raise ValueError("no broker URL")
        if len(out) > MAX_BROKERS:
            raise ValueError("at most %d broker URLs" % MAX_BROKERS)
        self.urls = out
        self._first = 0
        self._lock = threading.Lock()
        # "url: why" of each broker passed over, latest last (bounded); `passes`
        # counts them all
        self.passed_over: deque[str] = deque(maxlen=16)
        self.passes = 0

    def __str__(self) -> str:
        return ",".join(self.urls)

    def order(self) -> list[str]:
        """Every URL, starting with the one that answered last."""
        with self._lock:
            i = self._first
        return self.urls[i:] + self.urls[:i]

    def answered(self, url: str) -> None:
        """`url` answered: try it first from now on."""
        with self._lock:
            self._first = self.urls.index(url)

    def pass_over(self, url: str, why: str) -> None:
        """`url` failed (unreachable, silent, dropped): say so."""
        with self._lock:
            self.passed_over.append("%s: %s" % (url, why))
            self.passes += 1

    def since(self, passes: int) -> list[str]:
        """The passed-over entries after the first `passes` (those still kept)."""
        with self._lock:
            n = min(self.passes - passes, len(self.passed_over))
            return list(self.passed_over)[len(self.passed_over) - n:] if n > 0 else []


def as_brokers(urls: str | Sequence[str] | Brokers) -> Brokers:
    return urls if isinstance(urls, Brokers) else Brokers(urls)


class AllFailed(Exception):
    """Every broker failed one attempt: `failed` holds "url: why" of each."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__("; ".join(failed))


def first(brokers: Brokers, attempt: Callable[[str], T],
          failures: type[BaseException] | tuple[type[BaseException], ...],
          start: str | None = None) -> T:
    """attempt(url) for each broker, in `brokers.order()` (`start`, e.g. the
    broker of a connection in use, first), until one returns: that broker is
    tried first from then on. One that raises one of `failures` is passed
    over (with the exception's text as the reason); any other exception
    propagates (an answer, if a refusal: not asked elsewhere). AllFailed
    when every broker failed."""
    order = brokers.order()
    if start in order:
        order.remove(start)
        order.insert(0, start)
    failed = []
    for url in order:
        try:
            got = attempt(url)
        except failures as e:
            failed.append("%s: %s" % (url, e))
            brokers.pass_over(url, str(e))
            continue
        brokers.answered(url)
        return got
    raise AllFailed(failed)
