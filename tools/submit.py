"""Submit a signed transaction from the command line and wait for its answer:
publish on tl/<domain>/tx (QoS 1), wait on the sender's rx topic for the
receipt or the rejection of that transaction (matched by tx id), each
checked against the authority key: a receipt by its signed header and
Merkle proof, a rejection by the authority's seal (docs/PROTOCOL.md). Any
other message on the rx topic is skipped. The exchange itself (connect,
subscribe, publish, wait, the next broker of the domain when one is silent)
is tools/mqtt_ask.Line's: the caller's connection (a tool's one connection
per login), or one made for the submission."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from shared import errors, messages, replies_host, topics, tx
from tools.failover import Brokers
from tools.mqtt_ask import Line, Unanswered, client_id


@dataclass
class Reply:
    ok: bool
    reason: str
    detail: str
    height: int | None
    status: int | None
    retry_ms: int | None = None  # a retryable rejection: the same message may go again after

    def describe(self) -> str:
        if self.ok:
            state = "ok" if self.status == messages.STATUS_OK else f"failed: {self.reason}"
            return f"committed at height {self.height} ({state})"
        if self.retry_ms is not None:
            return (f"rejected for now: {self.reason} ({self.detail}); the same message may be "
                    f"sent again after {self.retry_ms} ms")
        return f"rejected: {self.reason} ({self.detail})"


class SubmitError(RuntimeError):
    pass


def next_seq() -> int:
    """A fresh seq for a person's transaction: milliseconds since the epoch
    (strictly increasing for one person using one machine; seqs need not be
    consecutive)."""
    return time.time_ns() // 1_000_000


def login_for(key, domain: str, principal: bytes | None = None) -> tuple[str, str]:
    """(username, password) of the principal whose current key `key` is
    (docs/IDENTITY.md §3); `principal` defaults to the key's own id. Anonymous
    brokers ignore both."""
    from gateway.broker.credentials import mqtt_password

    pid = principal or key.id
    return pid.hex(), mqtt_password(key.private, domain, pid)


def validators_of(g) -> tuple | None:
    """What a receipt's certificate is checked against for a domain of
    genesis `g` (messages.check_receipt): a quorum domain's validator set of
    its genesis, None (the authority key alone) otherwise."""
    if getattr(g, "consensus", "") != "quorum":
        return None
    return (g.threshold, sorted(g.validators), None)


def submit(brokers: str | Sequence[str] | Brokers, domain: str, message: bytes,
           authority: bytes, timeout: float = 15.0, login: tuple[str, str] | None = None,
           validators: tuple | None = None, line: Line | None = None) -> Reply:
    """Publish `message` and wait for its receipt or rejection on the sender's
    rx topic. `login` (login_for) authenticates on an enforcing broker: the
    sender itself, or the owner of the sending device. `validators`
    (validators_of): a quorum domain's set, whose k votes a receipt carries.

    `brokers`: one URL, several (comma-separated, a sequence, or a
    tools/failover.Brokers kept by the caller): a broker that cannot be
    reached or whose gateway gives no answer within `timeout` is passed over
    for the next, with the same signed message (one tx id: a chain commits
    it once). SubmitError naming each broker's failure when none answers.

    `line`: a connection of the caller's (tools/mqtt_ask.Line, under the
    login it was made with) to go over, shared with what else the caller
    does (its brokers then, not `brokers`); else one is made for this
    submission and closed after."""
    t = tx.decode(message)
    user = login[0] if login else t.sender.hex()
    failed: list[errors.TLError] = []  # receipts about it that did not check

    def pick(raw: bytes) -> Reply | None:
        try:
            m = replies_host.open_reply(raw, authority)
        except errors.TLError:
            return None  # unsigned or forged (anyone may write an rx topic): not an answer
        if m[messages.M_KIND] > messages.KIND_REJECT:
            return None  # a market notice (e.g. the retained balance), not an answer
        if m[messages.M_TX] != t.id:
            return None  # about another transaction, even one with the same seq
        if m[messages.M_KIND] == messages.KIND_RECEIPT:
            try:
                fields = messages.check_receipt(m, authority, validators)
            except errors.TLError as e:  # a bad proof or certificate: not an answer
                failed.append(e)
                return None
            return Reply(True, m[messages.M_REASON], "", fields["height"], m[messages.M_STATUS])
        return Reply(False, m[messages.M_REASON], m.get(messages.M_DETAIL, ""), None, None,
                     m.get(messages.M_RETRY))

    def remark() -> str:
        if not failed:
            return ""
        e = failed[-1]
        return "a receipt of it failed its check (%s: %s)" % (e.reason, e.detail)

    own = line is None
    if line is None:
        line = Line(brokers, client_id(user, "cli"), login=login, timeout=timeout)
    try:
        return line.ask(topics.tx(domain), message, topics.rx(domain, t.sender.hex()), pick,
                        qos=1, what="the transaction", timeout=timeout, remark=remark,
                        since=0 if own else None)
    except Unanswered as e:
        raise SubmitError(str(e)) from None
    finally:
        if own:
            line.close()
