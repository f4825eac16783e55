"""`thingledger xdomain resell`: a cross-domain reseller (docs/CROSSDOMAIN.md,
"A buyer board in B: the reseller").

A board cannot carry the proofs a cross-domain purchase needs (its heap),
so a buyer board in domain B buys from a host process that is an ordinary
principal of both domains, with its own key and funds:

- in B it is a supplier like any other (tools/supplier.py): it OFFERs a
  service it does not measure (`sell_as`, its own price), and learns of
  each agreement from its MATCH notice;
- for each agreement in B it buys the same quantity in A as a cross-domain
  buyer (tools/xbuy.CrossBuyer: A's offer proven in B's light client of
  A, the payment a packet B -> A, a DEMAND in A proven in B and recorded
  there with XPURCHASE, each batch A's supplier commits proven in B,
  recorded, and its readings checked against the root);
- each reading it has so checked it streams to the board on B's data topic
  of that agreement as its own signed reading (shared/stream.py, the format
  the board already checks) with A's index, value and scale, and commits
  each of A's batches as the same batch in B (same first index and count),
  so B's operator judges and pays it and the board needs no other firmware;
- when the purchase in A fails (no offer in A at its price, a proof
  refused, a timeout), it waits for B's verdicts on what it delivered
  already, then CLOSEs the agreement in B (the buyer's unspent escrow goes
  back to it), says why, and withdraws its offer for `retry` seconds.

Agreements are served one after the other, in the order of their MATCH.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.market.ledger import rules as market
from shared import errors
from shared import tx as txm
from tools.keys import KeyPair
from tools.relay import Seq, Side
from tools.supplier import Match, Stream, Supplier, SupplyError
from tools.xbuy import BuyError, CrossBuyer

VERDICT_WAIT_S = 30.0  # for B's verdicts on the batches delivered before a failure
# a purchase that fails (BuyError, SupplyError and paho's are RuntimeErrors; a
# store read; a chain query's answer, RemoteError): the agreement in B is closed
FAILED = (RuntimeError, errors.TLError, OSError, sqlite3.Error)


@dataclass(frozen=True)
class Terms:
    service: str  # bought in A
    sell_as: str  # offered in B
    price: int  # a reading, in B
    max_price: int  # a reading, in A at most
    interval_s: int = 5  # the offer's in B (a board's agreement lasts quantity x 2 x this + 120 s)
    valid_s: int = 600  # the offer's in B; offered again every valid_s / 2


class Reseller:
    def __init__(self, key: KeyPair, home: Side, market_side: Side, terms: Terms, *,
                 via: bytes | None = None, timeout: float = 15.0, wait: float = 300.0,
                 retry: float = 60.0, line: Callable[[str], None] = print) -> None:
        self.key = key
        self.b, self.a = home, market_side
        self.terms = terms
        self.via = via
        self.timeout = timeout
        self.wait = wait
        self.retry = retry
        self.line = line
        self.seq = Seq()  # one key signs in B as supplier and as buyer: one seq
        self.sup = Supplier(key, home, seq=self.seq, timeout=timeout, line=self._say)
        self.offer_due = 0.0

    def _say(self, text: str) -> None:
        self.line("resell: " + text)

    def _buyer(self) -> CrossBuyer:
        return CrossBuyer(self.key, self.b, self.a, timeout=self.timeout, via=self.via,
                          line=self._say, seq=self.seq)

    # -- the process -----------------------------------------------------------------
    def run(self, seconds: float | None = None, stop: threading.Event | None = None) -> int:
        t = self.terms
        self.sup.register()
        self.sup.listen()
        self._say("%s as %s: buys %s in %s at most %d a reading, sells it as %s in %s at %d"
                  % (self.b.domain, self.key.id.hex(), t.service, self.a.domain, t.max_price,
                     t.sell_as, self.b.domain, t.price))
        end = None if seconds is None else time.monotonic() + seconds
        try:
            while not (stop is not None and stop.is_set()):
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if now >= self.offer_due:
                    self._offer(now)
                try:
                    m = self.sup.matches.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.serve(m)
        except KeyboardInterrupt:
            pass
        finally:
            self.sup.stop()
        return 0

    def _offer(self, now: float) -> None:
        t = self.terms
        try:
            self.sup.offer(t.sell_as, t.price, t.interval_s, valid_s=t.valid_s)
        except SupplyError as e:
            self._say(str(e))
            self.offer_due = now + self.retry
            return
        self.offer_due = now + max(1, t.valid_s // 2)
        self._say("offers %s in %s at %d a reading (valid %d s)"
                  % (t.sell_as, self.b.domain, t.price, t.valid_s))

    # -- one agreement in B ------------------------------------------------------------
    def serve(self, m: Match) -> bool:
        """Buy `m`'s quantity in A and deliver it in B; True once all is
        delivered, False if the agreement was closed (and why said)."""
        h = m.id.hex()
        self._say("agreement %s in %s: %s buys %d readings of %s at %d"
                  % (h, self.b.domain, m.buyer.hex(), m.quantity, m.service, m.price))
        s = self.sup.stream(m.id)
        buyer = self._buyer()
        try:
            if m.service != self.terms.sell_as:
                raise BuyError("%s is not the service resold here" % m.service)
            if m.next_index is not None:  # told again: what was bought went with a restart
                raise BuyError("restarted: readings bought before are gone")
            self._deliver(m, s, buyer)
            self._say("agreement %s in %s: %d of %d readings delivered"
                      % (h, self.b.domain, s.next, m.quantity))
            return True
        except FAILED as e:
            why = (str(e) or type(e).__name__) if not isinstance(e, errors.TLError) else \
                "%s (%s)" % (e.reason, e.detail)
            self._say("agreement %s in %s: the purchase in %s failed: %s"
                      % (h, self.b.domain, self.a.domain, why))
            self._give_up(m, s)
            return False
        finally:
            buyer.close()
            s.close()

    def _deliver(self, m: Match, s: Stream, buyer: CrossBuyer) -> None:
        t = self.terms
        fit = [o for o in buyer.offers(t.service) if o[4] <= t.max_price]
        if not fit:
            raise BuyError("no offer of %s in %s at most %d" % (t.service, self.a.domain,
                                                                t.max_price))
        best = min(fit, key=lambda o: (o[4], o[1]))
        o = buyer.prove_offer(t.service, best[1])
        short = o.price * m.quantity - buyer.balance_in_market()
        if short > 0:
            buyer.pay(short)
            self._say("paid %d with a packet %s -> %s" % (short, self.b.domain, self.a.domain))
        d = buyer.demand(t.service, o.price, m.quantity, o.supplier, serves=m.id)
        ag = d.agreement
        self._say("bought in %s: agreement %s of %s, %d readings at %d, proven and recorded "
                  "in %s, linked to agreement %s" % (self.a.domain, ag.id.hex(),
                                                     ag.supplier.hex(), ag.quantity, ag.price,
                                                     self.b.domain, m.id.hex()))
        checked: dict[int, list[tuple[int, int, int]]] = {}  # A's batches, by first index
        deadline = time.monotonic() + self.wait
        while s.next < m.quantity:
            if m.id in self.sup.ended:
                raise BuyError("the agreement ended in %s" % self.b.domain)
            for c, readings in buyer.check(d):
                checked[c.first] = sorted(readings)
            while s.next in checked:  # in index order: a board refuses one behind
                for index, value, scale in checked.pop(s.next):
                    s.reading(index, value, scale)
                    self._say("reading %d (%de%d) of %s's agreement %s streamed in %s"
                              % (index, value, scale, self.a.domain, ag.id.hex()[:8],
                                 self.b.domain))
                s.commit()
            if s.next < m.quantity and time.monotonic() >= deadline:
                raise BuyError("timed out: %d of %d readings checked in %s"
                               % (len(d.verified), m.quantity, self.a.domain))
            time.sleep(0.2)

    def _give_up(self, m: Match, s: Stream) -> None:
        """Wait (bounded) for B's verdicts on the batches committed already,
        so they are paid; then CLOSE: the rest of the escrow goes back to
        the buyer. The offer is withdrawn for `retry` seconds."""
        if m.id not in self.sup.ended:
            deadline = time.monotonic() + VERDICT_WAIT_S
            while (len(self.judged(m.id)) < s.batch_no and m.id not in self.sup.ended
                   and time.monotonic() < deadline):
                time.sleep(0.2)
        if m.id in self.sup.ended:
            self._say("agreement %s in %s ended" % (m.id.hex(), self.b.domain))
        else:
            try:
                self.sup.close(m.id)
                self._say("closed agreement %s in %s: the buyer's unspent escrow goes back"
                          % (m.id.hex(), self.b.domain))
            except SupplyError as e:
                self._say("cannot close agreement %s: %s" % (m.id.hex(), e))
        try:
            self.sup.withdraw(self.terms.sell_as)
            self._say("offer of %s withdrawn in %s for %.0f s"
                      % (self.terms.sell_as, self.b.domain, self.retry))
        except SupplyError as e:
            self._say(str(e))
        self.offer_due = time.monotonic() + self.retry

    def judged(self, agreement: bytes) -> set[int]:
        """The batches of `agreement` B's verifier judged (paid or failed)."""
        out = set()
        for t in self.b.store.txs_of_type(txm.TYPE_CONTRACT_CALL):
            for e in t.events:
                if (len(e) >= 4 and e[0] == market.AGREEMENT
                        and e[1] in ("delivery-paid", "delivery-failed") and e[2] == agreement):
                    out.add(e[3])
        return out
