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
A restarted reseller takes up the agreements in B it supplies that are
still open (read from B's state): one whose purchase in A is linked to it
(XPURCHASE agree naming it, in B's state) is delivered on from where B's
agreement stands (its next index and batch), with the readings it had
checked before the stop from its state file (`ResaleBook`, in its data
folder: per agreement in B, the B height it was taken at and the readings
checked, by index); one with no purchase linked yet is bought afresh.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.market.ledger import rules as market
from gateway.xdomain import purchase, recorded
from shared import cbor, errors
from shared import tx as txm
from tools.keys import KeyPair
from tools.relay import Seq, Side
from tools.supplier import Match, Stream, Supplier, SupplyError
from tools.xbuy import BuyError, CrossBuyer, Delivery

VERDICT_WAIT_S = 30.0  # for B's verdicts on the batches delivered before a failure
SCAN_AGREEMENTS = 100_000  # agreement records of B read at start (a restart's take-up)
# a purchase that fails (BuyError, SupplyError and paho's are RuntimeErrors; a
# store read; a chain query's answer, RemoteError): the agreement in B is closed
FAILED = (RuntimeError, errors.TLError, OSError, sqlite3.Error)


class ResaleBook:
    """The reseller's own small state, one JSON file written whole (a
    temporary file renamed over it) after each change: per agreement in B
    (hex id) the B height it was taken at ("since"), the purchase in A
    serving it ("domain", "agreement": hex, once linked), the readings
    checked for it ("checked": index -> [value, scale]) and A's batches
    they came in ("batches"). No path: kept in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            try:
                got = json.loads(path.read_text())
                self.entries = dict(got.get("agreements", {}))
            except (OSError, ValueError, AttributeError):
                self.entries = {}  # unreadable: what B's chain holds is taken up alone

    def get(self, agreement: bytes) -> dict[str, Any] | None:
        return self.entries.get(agreement.hex())

    def put(self, agreement: bytes, entry: dict[str, Any]) -> None:
        self.entries[agreement.hex()] = entry
        self._write()

    def drop(self, agreement: bytes) -> None:
        if self.entries.pop(agreement.hex(), None) is not None:
            self._write()

    def keep_only(self, agreements: Iterable[bytes]) -> None:
        keep = {a.hex() for a in agreements}
        if set(self.entries) - keep:
            self.entries = {k: v for k, v in self.entries.items() if k in keep}
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"agreements": self.entries}, sort_keys=True))
        os.replace(tmp, self.path)


def judged(store: Any, agreement: bytes, since: int = 0, into: set[int] | None = None
           ) -> set[int]:
    """The batches of `agreement` B's verifier judged (paid or failed), read
    from B's contract calls at heights `since` and above (the agreement's:
    no verdict of it is older), added to `into`."""
    out = set() if into is None else into
    for t in store.txs_of_type(txm.TYPE_CONTRACT_CALL, since):
        for e in t.events:
            if (len(e) >= 4 and e[0] == market.AGREEMENT
                    and e[1] in ("delivery-paid", "delivery-failed") and e[2] == agreement):
                out.add(e[3])
    return out


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
                 retry: float = 60.0, line: Callable[[str], None] = print,
                 state: Path | None = None) -> None:
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
        self.book = ResaleBook(state)

    def _say(self, text: str) -> None:
        self.line("resell: " + text)

    def _buyer(self) -> CrossBuyer:
        return CrossBuyer(self.key, self.b, self.a, timeout=self.timeout, via=self.via,
                          line=self._say, seq=self.seq, keep=True)

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
            self.resume_open()
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
    def _height_b(self) -> int:
        h = self.b.store.head()
        return 0 if h is None else h.height

    def serve(self, m: Match, linked: tuple[str, bytes] | None = None) -> bool:
        """Buy `m`'s quantity in A and deliver it in B (`linked`: the
        purchase in A already linked to it, taken up after a restart);
        True once all is delivered, False if the agreement was closed (and
        why said)."""
        h = m.id.hex()
        if linked is None:
            self._say("agreement %s in %s: %s buys %d readings of %s at %d"
                      % (h, self.b.domain, m.buyer.hex(), m.quantity, m.service, m.price))
            entry: dict[str, Any] = {"since": self._height_b(), "checked": {}, "batches": []}
            self.book.put(m.id, entry)
        else:
            entry = self.book.get(m.id) or {"since": 0, "checked": {}, "batches": []}
            self._say("agreement %s in %s: taken up again, served by agreement %s in %s, "
                      "%d of %d readings committed"
                      % (h, self.b.domain, linked[1].hex(), linked[0], m.next_index or 0,
                         m.quantity))
        s = self.sup.stream(m.id)
        buyer = self._buyer()
        try:
            if m.service != self.terms.sell_as:
                raise BuyError("%s is not the service resold here" % m.service)
            if linked is not None:
                d, checked = self._take_up(m, s, buyer, linked, entry)
            elif m.next_index is not None:  # told again: what was bought went with a restart
                raise BuyError("restarted: readings bought before are gone")
            else:
                d, checked = self._buy(m, buyer, entry)
            self._deliver(m, s, buyer, d, checked, entry)
            self._say("agreement %s in %s: %d of %d readings delivered"
                      % (h, self.b.domain, s.next, m.quantity))
            self.book.drop(m.id)
            return True
        except FAILED as e:
            why = (str(e) or type(e).__name__) if not isinstance(e, errors.TLError) else \
                "%s (%s)" % (e.reason, e.detail)
            self._say("agreement %s in %s: the purchase in %s failed: %s"
                      % (h, self.b.domain, self.a.domain, why))
            self._give_up(m, s, int(entry.get("since", 0)))
            self.book.drop(m.id)
            return False
        finally:
            buyer.close()
            s.close()

    def _buy(self, m: Match, buyer: CrossBuyer, entry: dict[str, Any]
             ) -> tuple[Delivery, dict[int, list[tuple[int, int, int]]]]:
        """The purchase in A for `m`, recorded in B linked to `m`."""
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
        entry.update(domain=self.a.domain, agreement=ag.id.hex())
        self.book.put(m.id, entry)
        self._say("bought in %s: agreement %s of %s, %d readings at %d, proven and recorded "
                  "in %s, linked to agreement %s" % (self.a.domain, ag.id.hex(),
                                                     ag.supplier.hex(), ag.quantity, ag.price,
                                                     self.b.domain, m.id.hex()))
        return d, {}

    def _take_up(self, m: Match, s: Stream, buyer: CrossBuyer, linked: tuple[str, bytes],
                 entry: dict[str, Any]
                 ) -> tuple[Delivery, dict[int, list[tuple[int, int, int]]]]:
        """The purchase in A linked to `m` in B's state, delivered on after a
        restart: the agreement as B recorded it (proven then), A's commits
        recorded in B already not recorded again, the readings checked
        before the stop (the book) for the batches B has not committed yet
        streamed again, and A's stream listened to for the rest. B's stream
        goes on at B's agreement's next index and batch."""
        domain, aid = linked
        if domain != self.a.domain:
            raise BuyError("served by a purchase in %s, not %s" % (domain, self.a.domain))
        view = buyer.view
        p = recorded.get(view, domain, aid)
        g = market.agreement(view, m.id)
        if p is None or g is None:
            raise BuyError("the purchase or the agreement is not in %s's state" % self.b.domain)
        s.first = s.next = g["next_index"]
        s.batch_no = g["next_batch"]
        ag = purchase.ProvenAgreement(p.id, p.buyer, p.supplier, p.price, p.quantity,
                                      p.service, p.height)
        d = Delivery(ag, [buyer.prove_key(ag.supplier)])
        done = {x.batch: x for x in recorded.batches(self.b.store, p)}
        for t in self.a.store.txs_of_type(txm.TYPE_CONTRACT_CALL, ag.height):
            bs = [e[3] for e in t.events if len(e) == 7 and e[0] == market.AGREEMENT
                  and e[1] == purchase.COMMITTED and e[2] == aid]
            if bs and all(b in done for b in bs):
                d.recorded.add(t.id)  # recorded in B before the stop
        got = {int(i): (int(v[0]), int(v[1])) for i, v in entry.get("checked", {}).items()}
        checked: dict[int, list[tuple[int, int, int]]] = {}
        for k in entry.get("batches", []):
            x = done.get(k)
            if x is None or any(i not in got for i in range(x.first, x.first + x.count)):
                continue
            readings = [(i, *got[i]) for i in range(x.first, x.first + x.count)]
            d.batches.add(k)
            d.verified += readings
            if x.first >= s.next:  # checked, not committed in B yet: streamed again
                checked[x.first] = readings
        buyer.listen(d)
        self._say("agreement %s in %s: listening again to agreement %s in %s (%d readings "
                  "checked before)" % (m.id.hex(), self.b.domain, aid.hex(), domain,
                                       len(d.verified)))
        return d, checked

    def _deliver(self, m: Match, s: Stream, buyer: CrossBuyer, d: Delivery,
                 checked: dict[int, list[tuple[int, int, int]]], entry: dict[str, Any]) -> None:
        """Stream each batch of A checked (`checked`: A's batches by first
        index) in B, in index order, and commit it as B's batch; each
        batch checked is written in the book first."""
        ag = d.agreement
        deadline = time.monotonic() + self.wait
        while s.next < m.quantity:
            if m.id in self.sup.ended:
                raise BuyError("the agreement ended in %s" % self.b.domain)
            for c, readings in buyer.check(d):
                checked[c.first] = sorted(readings)
                entry.setdefault("checked", {}).update(
                    {str(i): [v, sc] for i, v, sc in readings})
                entry.setdefault("batches", []).append(c.batch)
                self.book.put(m.id, entry)
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

    def resume_open(self) -> None:
        """After a restart: each open agreement in B this reseller supplies
        is served on (linked: from where it stands) or bought afresh (no
        purchase linked yet, nothing committed); the book keeps only those."""
        view = purchase.StoreKv(self.b.store)
        found: dict[bytes, dict] = {}
        for hexid in list(self.book.entries):  # those it was serving: read one by one
            try:
                aid = bytes.fromhex(hexid)
            except ValueError:
                continue  # not an id: dropped below
            g = market.agreement(view, aid)
            if g is not None:
                found[aid] = g
        # and every agreement record of B (open and closed; paged by the store),
        # for one it was matched in and never wrote down
        for k, v in self.b.store.kv_range(market.AGREEMENTS, SCAN_AGREEMENTS):
            found.setdefault(k[-16:], cbor.loads(v))
        mine = [(aid, g) for aid, g in found.items()
                if g["state"] == "open" and g["supplier"] == self.key.id]
        self.book.keep_only(aid for aid, _ in mine)
        for aid, g in mine:
            m = Match(aid, g["buyer"], g["service"], g["price"], g["quantity"],
                      self.terms.interval_s, g["expiry"], 0, g["next_index"])
            linked = recorded.link(view, aid)
            if linked is None and g["next_index"] == 0 and not g["pending"]:
                self.serve(replace(m, next_index=None))  # nothing bought: afresh
            else:
                self.serve(m, linked)

    def _give_up(self, m: Match, s: Stream, since: int = 0) -> None:
        """Wait (bounded) for B's verdicts on the batches committed already,
        so they are paid (B's contract calls read from `since`, the B height
        the agreement was taken at, then from the last head read on); then
        CLOSE: the rest of the escrow goes back to the buyer. The offer is
        withdrawn for `retry` seconds."""
        if m.id not in self.sup.ended:
            deadline = time.monotonic() + VERDICT_WAIT_S
            seen: set[int] = set()
            while m.id not in self.sup.ended and time.monotonic() < deadline:
                head = self._height_b()
                if len(judged(self.b.store, m.id, since, seen)) >= s.batch_no:
                    break
                since = max(since, head)
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
