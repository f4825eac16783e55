"""Bad input end to end (issue 3 item 7), on amqtt and on mosquitto, with
every check in the gateway's process and with worker processes (`workers`).

A gateway (in-process, its own asyncio loop) takes, on tl/demo/tx, garbage
bytes, truncated CBOR, non-canonical CBOR (correctly signed), a wrong
signature, a replayed seq, an unknown sender, a wrong domain and a 1 MiB
message, with valid transactions from registered devices in between. Each bad
message gets a rejection with its reason code: on the sender's rx topic when
the sender can be read from the message, else on tl/demo/rejects. The valid
ones are all committed (receipts checked against the authority key), nothing
invalid is in the chain, and the gateway still takes transactions.

The 1 MiB message comes from a client of its own. mosquitto runs with
docs/mosquitto.conf's message_size_limit (16 KiB): it PUBACKs the message,
drops it, and (mosquitto 2.0.11, observed) then closes that client's
connection. So the gateway never sees it: the test checks it never reached
the gateway (mosquitto forwards a message before it PUBACKs it, and delivers
to one subscriber in order, so once the gateway has the valid transactions
published after that PUBACK, it would have had the big one first) nor the
chain, and that the gateway keeps running. The embedded amqtt broker refuses
it from its fixed header (gateway.broker.embedded.BrokerLimits.max_packet_size, 16
KiB): it resets that client's connection without reading the body or
PUBACKing, so the gateway never sees it either.
"""

from __future__ import annotations

import socket
from hashlib import sha256

from shared import messages, topics
from tests.support.e2e_devices import (
    DOMAIN,
    GatewayThread,
    SimDevice,
    chain_txs,
    new_domain,
    noncanonical_tx,
    thingledger,
)

ONE_MIB = 1 << 20


def _mqtt_string(text: str) -> bytes:
    return len(text).to_bytes(2, "big") + text.encode()


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_refused_unread(broker, topic: str, payload: bytes) -> None:
    """CONNECT, then a QoS 1 PUBLISH of `payload` on a raw socket; returns once
    the broker has closed the connection (fails if it PUBACKs instead)."""
    connect = _mqtt_string("MQTT") + b"\x04\x02\x00\x3c" + _mqtt_string("big-sender")
    body = _mqtt_string(topic) + b"\x00\x01" + payload
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        s.sendall(b"\x10" + _remaining_length(len(connect)) + connect)
        assert s.recv(4) == b"\x20\x02\x00\x00"
        try:
            s.sendall(b"\x32" + _remaining_length(len(body)) + body)
            assert s.recv(4) == b"", "the broker answered an oversize PUBLISH"
        except (ConnectionResetError, BrokenPipeError):
            pass  # reset by the broker: what it does


def rejects_on(watcher, tx_id: bytes, timeout: float = 10.0) -> dict:
    """The rejection of `tx_id` published on tl/demo/rejects."""
    topic = topics.rejects(DOMAIN)

    def find(c):
        for p in c.payloads(topic):
            m = messages.parse(p)
            if m[messages.M_TX] == tx_id:
                return m
        return None
    return watcher.wait_for(find, timeout, what=f"rejection of {tx_id.hex()[:12]} on {topic}")


def test_bad_input(any_broker, paho_client, tmp_path, workers):
    broker = any_broker
    data = tmp_path / "gw"
    authority = new_domain(data)
    gw = GatewayThread(data, broker.url, block_interval=0.2, workers=workers).start()
    devs: list[SimDevice] = []
    try:
        watcher = paho_client(broker, topics=[topics.rejects(DOMAIN)])
        a, b, stranger = (SimDevice(broker.host, broker.port, authority, name=n).connect()
                          for n in ("a", "b", "stranger"))
        devs = [a, b, stranger]
        registers = [d.submit(d.register_tx()) for d in (a, b)]
        for d in (a, b):
            d.wait_confirmed(10)
        assert set(registers) <= set(a.receipts) | set(b.receipts)

        valid: list[bytes] = list(registers)
        turn = [0]

        def good() -> None:
            d = (a, b)[turn[0] % 2]
            turn[0] += 1
            valid.append(d.submit(d.reading_tx(2000 + turn[0])))

        bad_ids: list[bytes] = []

        def bad(payload: bytes, by: SimDevice) -> bytes:
            by.publish_raw(payload)
            tx_id = sha256(payload).digest()
            bad_ids.append(tx_id)
            return tx_id

        # Every bad message, then a valid one from a registered device.
        # Sender unreadable -> tl/demo/rejects:
        garbage = bad(b"hello, this is not CBOR at all", a)
        good()
        truncated = bad(a.reading_tx(seq=a.seq + 1)[:-7], a)
        good()
        # Sender readable (protected kid) -> the sender's rx topic:
        noncanon = bad(noncanonical_tx(a.priv, a.id, a.seq + 1, {1: 7, 2: 0}), a)
        good()
        m = bytearray(a.reading_tx(seq=a.seq + 1))
        m[-1] ^= 0x01  # last byte of s in r||s
        badsig = bad(bytes(m), a)
        good()
        replay = bad(a.reading_tx(value=999, seq=1), a)  # seq 1: a's committed register
        good()
        unknown = bad(stranger.reading_tx(), stranger)
        good()
        wrongdom = bad(a.reading_tx(seq=a.seq + 1, domain="other"), a)
        good()
        # 1 MiB from another client (the broker disconnects it), then valid txs
        big = bytes(ONE_MIB)
        if broker.name == "mosquitto":  # it PUBACKs, drops it, then disconnects
            paho_client(broker).publish(topics.tx(DOMAIN), big, timeout=30)
        else:
            publish_refused_unread(broker, topics.tx(DOMAIN), big)
        good()
        good()

        for d in (a, b):
            d.wait_confirmed(20)

        # each bad message got its rejection, where expected
        expect_rejects = {garbage: "bad-cbor", truncated: "bad-cbor"}
        for tx_id, reason in expect_rejects.items():
            assert rejects_on(watcher, tx_id)[messages.M_REASON] == reason
        assert rejects_on(watcher, truncated)[messages.M_DETAIL] == "truncated"
        expect_rx = {noncanon: (a, "bad-cbor", "non-canonical"), badsig: (a, "bad-signature", None),
                     replay: (a, "replay", None), unknown: (stranger, "unknown-device", None),
                     wrongdom: (a, "wrong-domain", None)}
        for tx_id, (dev, reason, detail) in expect_rx.items():
            r = dev.rejection_for(tx_id)
            assert (r.reason, r.topic) == (reason, dev.rx_topic), r
            if detail is not None:
                assert r.detail == detail, r
        # the broker dropped the 1 MiB message (mosquitto: message_size_limit
        # of docs/mosquitto.conf; amqtt: BrokerLimits): no reply for it
        # anywhere, never received
        assert not any(messages.parse(p)[messages.M_REASON] == "too-large"
                       for p in watcher.payloads())
        assert not any(r.reason == "too-large" for r in a.rejections)

        # all valid txs committed, with verified receipts, no stray replies
        for d in (a, b):
            assert not d.bad_replies, d.bad_replies
            assert all(r.reason != "too-large" and r.tx_id in bad_ids for r in d.rejections)
        got = set(a.receipts) | set(b.receipts)
        assert got == set(valid)

        # the gateway still runs: one more tx is committed
        last = a.submit(a.reading_tx(4242))
        a.receipt_for(last, 10)
        valid.append(last)
        assert gw.running
        c = gw.gw.counters
        # everything published reached the gateway, but the 1 MiB message
        assert c.received == len(valid) + len(bad_ids), c
        assert c.rejected == len(bad_ids)
        assert c.committed == len(valid)
        if workers:  # every message was checked in the worker processes
            assert gw.gw.verifier.checked == c.received and not gw.gw.verifier.redone
    finally:
        for d in devs:
            d.close()
        gw.stop()

    # nothing invalid in the chain; the CLI agrees
    chain = {t.id for t in chain_txs(data)}
    assert chain == set(valid)
    assert not chain & set(bad_ids)
    assert sha256(big).digest() not in chain
    verify = thingledger("chain", "verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shown = thingledger("tx", valid[-1].hex(), "--data-dir", str(data))
    assert shown.returncode == 0 and valid[-1].hex()[:16] in shown.stdout, shown
    for tx_id in (badsig, replay):
        missing = thingledger("tx", tx_id.hex(), "--data-dir", str(data))
        assert missing.returncode == 1 and "not found" in missing.stderr, missing
