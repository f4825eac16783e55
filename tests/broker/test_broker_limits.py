"""The embedded broker's limits (gateway.broker.embedded.BrokerLimits), against the
project's amqtt broker in-process (anonymous, as `make run` starts it) with
real clients: paho, and raw sockets for what no polite client does."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from gateway.broker.embedded import MESSAGE_OVERHEAD, BrokerLimits, ThreadedBroker, charge
from tests.support.brokers import HOST, free_port, unique, wait_until

KIB = 1024


@pytest.fixture
def limited():
    """limited(**limits) -> a started ThreadedBroker with those BrokerLimits."""
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    started: list[ThreadedBroker] = []

    def make(**limits) -> ThreadedBroker:
        tb = ThreadedBroker(HOST, free_port(), limits=BrokerLimits(**limits))
        tb.host, tb.port = HOST, tb.broker.port  # for brokers.paho_client
        tb.start()
        started.append(tb)
        return tb

    yield make
    for tb in started:
        tb.stop()


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(text: str) -> bytes:
    return len(text.encode()).to_bytes(2, "big") + text.encode()


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    body = _s("MQTT") + b"\x04\x02" + keepalive.to_bytes(2, "big") + _s(client_id)
    return b"\x10" + _remaining(len(body)) + body


def raw_client(tb, client_id: str | None = None, rcvbuf: int | None = None,
               keepalive: int = 60) -> socket.socket:
    """A TCP connection; with client_id, CONNECTed (CONNACK read)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((HOST, tb.port))
    if client_id:
        s.sendall(connect_packet(client_id, keepalive))
        assert s.recv(4) == b"\x20\x02\x00\x00", "CONNACK"
    return s


def publishes(data: bytes) -> list[bytes]:
    """The bodies of the QoS 0 PUBLISH packets in a byte stream from the broker."""
    out, i = [], 0
    while i < len(data):
        first, length, shift = data[i], 0, 0
        i += 1
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if first >> 4 == 3:
            out.append(data[i:i + length])
        i += length
    return out


def subscribe_raw(s: socket.socket, topic: str, qos: int) -> None:
    body = b"\x00\x01" + _s(topic) + bytes([qos])
    s.sendall(b"\x82" + _remaining(len(body)) + body)


def closed_by_peer(s: socket.socket, timeout: float = 10.0) -> bool:
    """Wait until the broker closes `s` (EOF or reset); bytes it sent first
    are read and discarded. False if it is still open at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not s.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def shrink_send_buffer(tb, client_id: str) -> None:
    """The broker's socket to `client_id` gets a small kernel send buffer (a
    slow link), so a backlog forms in the broker's queue, not in the kernel
    (which on loopback takes megabytes)."""
    def shrink(b) -> bool:
        box = b.outbox_of(client_id)
        if box is None:
            return False
        sock = box.handler.writer._writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return True

    wait_until(lambda: tb.call(shrink), 10, what=f"{client_id}'s session")


def device_connects(tb, timeout: float = 2.0) -> bool:
    """Does a paho client get a CONNACK within `timeout` (one try)?"""
    import threading

    import paho.mqtt.client as mqtt

    ok = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("try"),
                    protocol=mqtt.MQTTv311, reconnect_on_failure=False)
    c.on_connect = lambda _c, _u, _f, rc, _p: ok.set() if not rc.is_failure else None
    try:
        c.connect(HOST, tb.port, keepalive=30)
    except OSError:
        return False
    c.loop_start()
    try:
        return ok.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()


def stat(tb, name: str) -> int:
    return tb.call(lambda b: b.stats[name])


# --------------------------------------------------------------------------- packet size
def test_oversize_publish_is_refused_unread_and_never_delivered(limited, paho_client):
    tb = limited(max_packet_size=16 * KIB)
    sub = paho_client(tb, topics="big/#")
    attacker = raw_client(tb, unique("big"))
    # an 8 MiB retained QoS 1 PUBLISH: header and 4 KiB of body only; the
    # broker must close the connection without waiting for the rest
    topic = _s("big/x")
    head = b"\x33" + _remaining(len(topic) + 2 + 8 * 1024 * KIB) + topic + b"\x00\x01"
    attacker.sendall(head + b"z" * 4096)
    assert closed_by_peer(attacker), "the broker kept reading an oversize packet"
    assert stat(tb, "packet_too_large") == 1

    # the largest packet that fits goes through; one byte more does not
    pub = paho_client(tb)
    fits = 16 * KIB - (1 + 2 + 2 + len("big/fits") + 2)  # header, length, topic, packet id
    pub.publish("big/fits", b"f" * fits, qos=1)
    sub.wait_for(lambda c: c.payloads("big/fits"), 10, what="the 16 KiB message")
    over = raw_client(tb, unique("over"))
    body = _s("big/over") + b"\x00\x02" + b"o" * (fits + 1)
    over.sendall(b"\x32" + _remaining(len(body)) + body)
    assert closed_by_peer(over)
    pub.publish("big/after", b"barrier", qos=1)
    sub.wait_for(lambda c: c.payloads("big/after"), 10, what="the barrier")
    assert not sub.payloads("big/x") and not sub.payloads("big/over")
    later = paho_client(tb, topics="big/#")  # nothing oversize was retained either
    later.publish("big/later", b"barrier", qos=1)
    later.wait_for(lambda c: c.payloads("big/later"), 10, what="the later barrier")
    assert {m.topic for m in later.messages} == {"big/later"}
    assert stat(tb, "packet_too_large") == 2


# --------------------------------------------------------------------------- retained
def synced(c) -> None:
    """Return once the broker handled everything `c` published so far: it
    handles one client's messages in order, and `c` subscribes to sync/<id>."""
    token = unique("sync").encode()
    c.publish(c.topics[0], token, qos=1)
    c.wait_for(lambda cl: token in cl.payloads(c.topics[0]), 10, what="the sync message")


def test_retained_storage_is_bounded_per_client_and_in_total(limited, paho_client):
    size = 4 * KIB
    cost = charge("r/a/0", b"x" * size)
    tb = limited(retained_per_client=3 * cost, retained_total=5 * cost)
    a = paho_client(tb, client_id="hoarder-a", topics="sync/a")
    for i in range(6):
        a.publish(f"r/a/{i}", bytes([65 + i]) * size, qos=1, retain=True)
    synced(a)
    assert tb.call(lambda b: b.retained_of("hoarder-a")) == 3 * cost
    assert stat(tb, "retained_refused") == 3
    # replacing one of its own topics is within its budget; a new one is not
    a.publish("r/a/0", b"N" * size, qos=1, retain=True)
    synced(a)
    assert stat(tb, "retained_refused") == 3
    # the total: a second client gets two, the third is refused
    b = paho_client(tb, client_id="hoarder-b", topics="sync/b")
    for i in range(3):
        b.publish(f"r/b/{i}", b"b" * size, qos=1, retain=True)
    synced(b)
    assert tb.call(lambda br: br.retained_size) == 5 * cost
    assert stat(tb, "retained_refused") == 4

    later = paho_client(tb, topics="r/#")
    later.wait_count(5, timeout=10)
    later.publish("r/barrier", b"end", qos=1)
    later.wait_for(lambda c: c.payloads("r/barrier"), 10, what="barrier")
    stored = {m.topic: m.payload[:1] for m in later.messages if m.retain}
    assert stored == {"r/a/0": b"N", "r/a/1": b"B", "r/a/2": b"C", "r/b/0": b"b", "r/b/1": b"b"}

    # clearing a retained message gives its budget back
    a.publish("r/a/1", b"", qos=1, retain=True)
    synced(a)
    assert tb.call(lambda br: br.retained_of("hoarder-a")) == 2 * cost
    b.publish("r/b/2", b"b" * size, qos=1, retain=True)
    synced(b)
    assert tb.call(lambda br: br.retained_size) == 5 * cost
    assert stat(tb, "retained_refused") == 4


# --------------------------------------------------------------------------- session queues
def _flood(pub, topic: str, n: int, size: int, qos: int) -> None:
    for i in range(n):
        pub.client.publish(topic, i.to_bytes(4, "big") + b"p" * (size - 4), qos=qos)
    pub.publish(topic + "/end", b"end", qos=1)  # acknowledged: the flood reached the broker


def test_a_subscriber_that_never_reads_is_disconnected_and_its_queue_stays_bounded(
        limited, paho_client):
    limit = 256 * KIB
    tb = limited(queue_bytes=limit)
    slow = raw_client(tb, "slow", rcvbuf=4096)
    shrink_send_buffer(tb, "slow")
    subscribe_raw(slow, "tx/#", 1)
    wait_until(lambda: tb.call(lambda b: b.outbox_of("slow") is not None and "tx/#" in
                               b.subscriptions), 10, what="slow's subscription")
    seen: list[int] = []

    def sample(b) -> bool:
        box = b.outbox_of("slow")
        if box is not None:
            seen.append(box.size)
        return b.stats["slow_disconnected"] > 0

    fast = paho_client(tb, topics="tx/#")
    pub = paho_client(tb)
    n = 2000  # 2000 x 500 B: four times the limit
    for i in range(n):
        pub.client.publish("tx/in", i.to_bytes(4, "big") + b"p" * 496, qos=1)
        if i % 100 == 99:  # at the pace of the reading subscriber
            fast.wait_count(i + 1, "tx/in", timeout=10)
            tb.call(sample)
    wait_until(lambda: tb.call(sample), 10, what="the non-reader to be disconnected")
    assert max(seen) <= limit
    assert tb.call(lambda b: b.stats["slow_disconnected"]) == 1
    assert closed_by_peer(slow), "slow's socket is still open"
    # the reading subscriber got every message, in order, and stayed
    fast.wait_count(n, "tx/in", timeout=30)
    assert fast.connects == 1
    got = [int.from_bytes(p[:4], "big") for p in fast.payloads("tx/in")]
    assert got == list(range(n))
    fast_id = fast.client._client_id.decode()
    wait_until(lambda: tb.call(lambda b: b.outbox_of(fast_id).size) == 0, 10,
               what="the reader's PUBACKs to empty its outbox")


def test_qos0_backlog_drops_the_oldest_and_keeps_the_client(limited, paho_client):
    q0 = 32 * KIB
    tb = limited(queue_qos0_bytes=q0)
    slow = raw_client(tb, "slow0", rcvbuf=4096)
    shrink_send_buffer(tb, "slow0")
    subscribe_raw(slow, "q0/#", 0)
    slow.recv(5)  # SUBACK
    pub = paho_client(tb)
    size = 500
    n = 1000  # 500 kB at QoS 0
    for i in range(n):
        pub.client.publish("q0/x", i.to_bytes(4, "big") + b"p" * (size - 4), qos=0)
    pub.publish("q0/end", b"end", qos=1)
    box = wait_until(lambda: tb.call(lambda b: b.outbox_of("slow0")), 5, what="slow0's outbox")
    sizes: list[int] = []

    def backlog(b) -> bool:
        sizes.append(box.qos0_size)
        return any(m.topic == "q0/end" for m in box.queue)  # the flood went through the queue

    wait_until(lambda: tb.call(backlog), 10, what="the flood to reach slow0's queue")
    assert max(sizes) <= q0
    assert stat(tb, "qos0_dropped") > 0
    assert stat(tb, "slow_disconnected") == 0
    # it reads at last: still connected, and the newest messages are there
    slow.settimeout(5)
    data = b""
    while b"q0/end" not in data:
        chunk = slow.recv(65536)
        assert chunk, "slow0 was disconnected"
        data += chunk
    got = [int.from_bytes(body[6:10], "big") for body in publishes(data) if body[2:6] == b"q0/x"]
    assert got == sorted(got) and len(got) < n  # in order, some dropped...
    kept = q0 // charge("q0/x", b"p" * size) - 1
    assert got[-kept:] == list(range(n - kept, n))  # ...the oldest: the newest all came
    assert tb.call(lambda b: box.size) == 0


# --------------------------------------------------------------------------- connections
def test_sockets_without_connect_are_closed_after_the_timeout(limited, paho_client):
    tb = limited(connect_timeout=0.5)
    idle = [raw_client(tb) for _ in range(5)]
    slowloris = raw_client(tb)
    slowloris.sendall(connect_packet("slowloris")[:6])  # a CONNECT that never ends
    for s in [*idle, slowloris]:
        assert closed_by_peer(s, 10), "a socket without CONNECT is still open"
    assert stat(tb, "connect_timeout") == 6
    wait_until(lambda: tb.call(lambda b: b.open_connections) == 0, 5, what="connections freed")
    c = paho_client(tb, topics="ok/#")  # a device still gets in
    c.publish("ok/1", b"x", qos=1)
    c.wait_count(1, "ok/1")


def test_a_connected_client_silent_past_its_keepalive_is_disconnected(limited, paho_client):
    tb = limited()
    silent = raw_client(tb, "silent", keepalive=1)
    pinging = raw_client(tb, "pinging", keepalive=1)
    start, pings = time.monotonic(), 0
    while not closed_by_peer(silent, 0.4):  # 1.5 s of keepalive, then the broker's tick
        pinging.sendall(b"\xc0\x00")  # PINGREQ
        pings += 1
        assert time.monotonic() - start < 10, "a silent client was kept"
    assert stat(tb, "keepalive_timeout") == 1
    pinging.sendall(b"\xc0\x00")
    pings += 1
    pinging.settimeout(5)
    got = b""
    while len(got) < 2 * pings:
        chunk = pinging.recv(2 * pings - len(got))
        assert chunk, "the client that pinged was disconnected"
        got += chunk
    assert got == b"\xd0\x00" * pings  # a PINGRESP for each: still connected


def test_connections_beyond_the_limit_are_refused_while_others_keep_working(
        limited, paho_client):
    tb = limited(max_connections=4)
    a = paho_client(tb, topics="lim/#")
    others = [raw_client(tb, unique("dev")) for _ in range(3)]  # CONNECTed
    assert tb.call(lambda b: b.open_connections) == 4
    try:
        extra = raw_client(tb)
    except ConnectionResetError:  # the broker's reset came before connect() returned
        extra = None
    assert extra is None or closed_by_peer(extra, 5), "a fifth connection was kept"
    assert stat(tb, "connections_refused") == 1
    assert not device_connects(tb)  # a device cannot connect now...
    a.publish("lim/still", b"ok", qos=1)  # ...the connected ones keep working
    a.wait_count(1, "lim/still")
    subscribe_raw(others[0], "lim/#", 0)
    assert others[0].recv(5)[:1] == b"\x90"  # SUBACK
    for s in others:
        s.close()
    wait_until(lambda: tb.call(lambda b: b.open_connections) <= 2, 5, what="sockets gone")
    b = paho_client(tb, topics="lim/#")
    b.publish("lim/b", b"in", qos=1)
    a.wait_count(1, "lim/b")


def test_at_the_limit_a_device_takes_the_place_of_a_socket_without_connect(
        limited, paho_client):
    tb = limited(max_connections=4, connect_timeout=60)
    a = paho_client(tb, topics="lim/#")
    idle = [raw_client(tb) for _ in range(3)]
    wait_until(lambda: tb.call(lambda b: b.open_connections) == 4, 5, what="4 connections")
    # a device keeps trying; once the oldest idle socket has waited a second
    # the broker closes it for the device
    dev = paho_client(tb, topics="lim/#", timeout=10)
    assert stat(tb, "idle_evicted") == 1
    assert closed_by_peer(idle[0], 5)
    dev.publish("lim/dev", b"in", qos=1)
    a.wait_count(1, "lim/dev")
    assert tb.call(lambda b: b.open_connections) == 4


def test_limits_default_below_the_file_limit():
    import resource

    lim = BrokerLimits()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert lim.connection_limit() <= min(lim.max_connections, soft - 1)
    assert lim.max_packet_size == 16 * KIB
    assert charge("t", b"ab") == 3 + MESSAGE_OVERHEAD
    with pytest.raises(ValueError, match="queue_bytes"):
        BrokerLimits(queue_bytes=0)
