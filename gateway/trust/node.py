"""What the gateway's ingress does with trust (docs/TRUST.md, "Consequences"):

- a banned sender is refused (reason `banned`), except its ROTATE_KEY: the
  owner-approved rotation is how a banned device comes back;
- a sender on probation gets the stricter per-sender rate limit
  (probation_rate_tps / probation_rate_burst, or the normal one if lower):
  refused with the retryable `rate-limited`;
- refused claims are counted per claimant (a signed CLAIM the chain refuses
  because the device is someone else's, unknown to the registry, or its
  statement does not verify: someone presenting a device id it does not
  hold); at FAKE_ID_CLAIMS of them the gateway files a REPORT
  `fake-id-attempt` against the claimant, with the last claim as evidence
  (once per claimant and gateway run). Failed broker logins cannot be
  pinned on a principal (the password is what proves the id), so they
  stay the broker's counters (Guard.refused);
- a second session under one device id: the embedded broker refuses a
  connection presenting an online device's id (already-connected), but
  mosquitto takes the session over (same client id: the first is dropped,
  its will `offline` published) or keeps both (another `<id>-...` client
  id). The gateway watches the devices' status topics and reports an
  `online` that follows the same id's `online` or `offline` within
  SESSION_S seconds as a possible second session (an event line and a
  counter, never an effect on chain: on an open domain anyone may publish
  a status);
- a second, different tx of one sender with a seq the gateway already holds
  (pending or committed) is a proof of equivocation: the gateway files it
  itself as a PROOF tx signed by the authority, once per (sender, seq).
  Looking up the first tx: the mempool's queue, then the txs table (a scan
  of the table: it happens only for a signature-checked message that
  reuses a seq, and once per offence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.ledger.state import StateView
from gateway.node.ratelimit import SenderLimit
from gateway.trust import standing as st
from gateway.trust.rules import TX_EQUIVOCATION
from shared import cbor, errors, reasons
from shared import tx as txm

FAKE_ID_CLAIMS = 3
SESSION_S = 5.0  # seconds: an online this soon after the id's last status looks like a 2nd session
# refusals of a CLAIM (its own signature verified) that mean: not the claimant's device
_FAKE_CLAIM = {(errors.ALREADY_OWNED, ""), (errors.ALREADY_REGISTERED, ""),
               (errors.NOT_IN_REGISTRY, ""), (errors.BAD_SIGNATURE, "statement")}
Send = Callable[[int, dict[int, Any]], Any]  # (tx type, body) -> the operator's tx


class Banned(errors.TLError):
    reason = reasons.BANNED


class TrustGate:
    def __init__(self, normal: SenderLimit, probation_tps: float, probation_burst: int,
                 *, enabled: bool) -> None:
        self.enabled = enabled
        self.normal = normal
        rate = min(probation_tps, normal.rate) if normal.rate > 0 else probation_tps
        burst = min(probation_burst, int(normal.burst)) if normal.rate > 0 else probation_burst
        self.probation = SenderLimit(rate, max(1, burst), exempt=normal.exempt,
                                     clock=normal.clock)
        self.filed: set[tuple[bytes, int]] = set()
        self.refused_claims: dict[bytes, int] = {}  # claimant -> count (FAKE_ID_CLAIMS)
        self.status: dict[bytes, tuple[bool, float]] = {}  # device -> (online, when)
        self.second_sessions = 0
        self.refused_banned = 0

    def limit_for(self, sender: bytes, view: StateView) -> SenderLimit:
        """The rate limit that applies to `sender` now (refusing it if banned)."""
        if not self.enabled or sender in self.normal.exempt:
            return self.normal
        lv = st.level_of(view, sender)
        if lv == st.BANNED:
            raise Banned("sender")
        return self.probation if lv == st.PROBATION else self.normal

    def admit(self, t: txm.Tx, view: StateView) -> SenderLimit:
        """Refuse a banned sender's tx (Banned), else the limit for it."""
        try:
            return self.limit_for(t.sender, view)
        except Banned:
            if t.type == txm.TYPE_ROTATE_KEY:
                return self.normal
            self.refused_banned += 1
            raise

    def equivocation(self, t: txm.Tx, pending: Iterable[txm.Tx],
                     committed: Callable[[bytes, int], bytes | None]) -> bytes | None:
        """The other message of `t`'s sender with `t`'s seq and another body,
        if the gateway holds one and has not filed it yet (None otherwise).
        `t` passed the signature check and was refused as a replay."""
        if not self.enabled or (t.sender, t.seq) in self.filed or t.sender in self.normal.exempt:
            # (the gateway's own txs: after a restart its operator may sign a seq again
            # whose first message the broker still holds; that is no device's offence)
            return None
        other = next((p.message for p in pending
                      if p.sender == t.sender and p.seq == t.seq and p.id != t.id), None)
        if other is None:
            other = committed(t.sender, t.seq)
        if other is None or other == t.message:
            return None
        self.filed.add((t.sender, t.seq))
        return other

    def level_changes(self, before: StateView, kv_diff: Mapping[bytes, bytes | None]
                      ) -> list[tuple[bytes, str, str, str]]:
        """(id, old level, new level, reason) of each principal whose level a
        block's kv diff moves (read before the diff is folded into `before`)."""
        if not self.enabled:
            return []
        out = []
        for k, v in kv_diff.items():
            if not k.startswith(st.RECORDS) or v is None:
                continue
            pid = k[len(st.RECORDS):]
            new = st.Record.from_bytes(v)
            old = st.get(before, pid)
            if old is None or old.level != new.level:
                reason = ""
                if new.history:
                    h = before.kv_get(st.history_key(pid, new.history - 1)) \
                        or kv_diff.get(st.history_key(pid, new.history - 1))
                    reason = cbor.loads(h)[3] if h else ""
                out.append((pid, old.level if old else "new", new.level, reason))
        return out

    def on_status(self, device: bytes, online: bool, now: float) -> bool:
        """A status message of `device`; True if it looks like a second
        session under its id (see SESSION_S)."""
        last = self.status.get(device)
        self.status[device] = (online, now)
        if len(self.status) > 4 * 4096:  # a bounded table: keep the recent ones
            cut = now - SESSION_S
            self.status = {d: v for d, v in self.status.items() if v[1] >= cut}
        if online and last is not None and now - last[1] < SESSION_S:
            self.second_sessions += 1
            return True
        return False

    def fake_id_attempt(self, t: txm.Tx, e: errors.TLError) -> dict[int, Any] | None:
        """The REPORT body to file when the refusal `e` of `t` makes its sender's
        FAKE_ID_CLAIMS-th refused claim (None otherwise)."""
        detail = "" if e.detail == e.reason else e.detail  # (a RuleError without detail)
        if not self.enabled or t.type != txm.TYPE_CLAIM or (e.reason, detail) not in _FAKE_CLAIM:
            return None
        n = self.refused_claims.get(t.sender, 0) + 1
        self.refused_claims[t.sender] = n
        if n != FAKE_ID_CLAIMS:
            return None
        return {1: t.sender, 2: "fake-id-attempt", 3: t.message[:1024]}

    @staticmethod
    def proof_body(first: bytes, second: bytes) -> dict[int, Any]:
        return {1: TX_EQUIVOCATION, 2: first, 3: second}
