"""Submit a signed transaction from the command line and wait for its answer:
publish on tl/<domain>/tx (QoS 1), wait on the sender's rx topic for the
receipt or the rejection of that transaction (matched by tx id), each
checked against the authority key: a receipt by its signed header and
Merkle proof, a rejection by the authority's seal (docs/PROTOCOL.md). Any
other message on the rx topic is skipped. The transaction goes out only once
the broker granted the subscription (a refused SUBACK: subscribe again)."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from shared import errors, messages, replies_host, topics, tx

SUBSCRIBE_RETRY_S = 0.2  # s before subscribing again after a refused SUBACK


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


def submit(broker_url: str, domain: str, message: bytes, authority: bytes,
           timeout: float = 15.0, login: tuple[str, str] | None = None,
           validators: tuple | None = None) -> Reply:
    """Publish `message` and wait for its receipt or rejection on the sender's
    rx topic. `login` (login_for) authenticates on an enforcing broker: the
    sender itself, or the owner of the sending device. `validators`
    (validators_of): a quorum domain's set, whose k votes a receipt carries."""
    t = tx.decode(message)
    host, port = parse_url(broker_url)
    replies: queue.Queue[bytes] = queue.Queue()
    subscribed = queue.Queue()
    user = login[0] if login else t.sender.hex()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"{user}-cli-{time.time_ns() % 10**9}", protocol=mqtt.MQTTv311)
    if login:
        c.username_pw_set(*login)
    c.on_message = lambda _c, _u, m: replies.put(m.payload)
    # granted or refused (SUBACK 0x80)
    c.on_subscribe = lambda _c, _u, _mid, codes, _p: subscribed.put(
        not any(rc.is_failure for rc in codes))
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        raise SubmitError(f"cannot reach the broker at {broker_url}: {e}") from None
    c.loop_start()
    try:
        subscribe(c, subscribed, topics.rx(domain, t.sender.hex()), timeout, broker_url)
        c.publish(topics.tx(domain), message, qos=1).wait_for_publish(timeout)
        deadline = time.monotonic() + timeout
        failed: errors.TLError | None = None  # the last receipt about it that did not check
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = replies_host.open_reply(replies.get(timeout=left), authority)
            except queue.Empty:
                break
            except errors.TLError:
                continue  # unsigned or forged (anyone may write an rx topic): not an answer
            if m[messages.M_KIND] > messages.KIND_REJECT:
                continue  # a market notice (e.g. the retained balance), not an answer
            if m[messages.M_TX] != t.id:
                continue  # about another transaction, even one with the same seq
            if m[messages.M_KIND] == messages.KIND_RECEIPT:
                try:
                    fields = messages.check_receipt(m, authority, validators)
                except errors.TLError as e:  # a bad proof or certificate: not an answer
                    failed = e
                    continue
                return Reply(True, m[messages.M_REASON], "", fields["height"],
                             m[messages.M_STATUS])
            return Reply(False, m[messages.M_REASON], m.get(messages.M_DETAIL, ""), None, None,
                         m.get(messages.M_RETRY))
        if failed is not None:
            raise SubmitError(f"no answer from the gateway within {timeout:.0f} s that checks: "
                              f"a receipt of it failed its check ({failed.reason}: "
                              f"{failed.detail})")
        raise SubmitError(f"no answer from the gateway within {timeout:.0f} s")
    finally:
        shut(c)


def subscribe(c: mqtt.Client, subscribed: queue.Queue, topic: str, timeout: float,
              broker_url: str) -> None:
    """Subscribe `c` to `topic` (QoS 1) and wait until the broker grants it,
    subscribing again while it refuses (bounded by `timeout`). NATS's MQTT
    listener refuses a QoS 1 SUBSCRIBE (SUBACK 0x80, after ~5 s) when it cannot
    make the subscription's JetStream consumer in time, as for a minute or so
    after a node of the cluster died: a client that took that SUBACK for a
    subscription sent its transaction and never got the answer (docs/CONSENSUS.md,
    "A light node after a machine died"). `subscribed` gets on_subscribe's
    verdicts (True: granted)."""
    deadline = time.monotonic() + timeout
    refused = 0
    while True:
        c.subscribe(topic, qos=1)
        try:
            granted = subscribed.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            granted = None
        if granted:
            return
        if granted is False:
            refused += 1
        if time.monotonic() >= deadline:
            if refused:
                raise SubmitError(f"the broker at {broker_url} refused the subscription to "
                                  f"{topic} {refused} time(s) within {timeout:.0f} s")
            raise SubmitError(f"the broker at {broker_url} did not confirm the subscription "
                              f"within {timeout:.0f} s")
        time.sleep(min(SUBSCRIBE_RETRY_S, max(0.0, deadline - time.monotonic())))


def shut(c: mqtt.Client) -> None:
    """Close `c`'s connection (its on_disconnect not called) and stop its
    network thread."""
    c.on_disconnect = None
    c.disconnect()  # first: it wakes the network thread, which loop_stop joins
    c.loop_stop()   # (the other way round, loop_stop waits out a ~1 s select)
