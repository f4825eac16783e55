"""The firmware MQTT client (firmware/mqtt.py) driven
under `micropython -X heapsize=64k`, against amqtt (in-process) and mosquitto.

Each scenario is a script in tests/e2e/firmware_scripts/ printing progress lines that
the test waits for (bounded); a paho-mqtt client plays the other side. The
firmware is loaded as mpy-cross bytecode, as on a board.

mosquitto runs here with max_inflight_messages 1: a QoS 1 message the firmware
does not PUBACK would hold back every later one, so "the next message arrives"
proves the PUBACK. amqtt has no such limit: its session's in-flight table is
checked instead.
"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from tests.support.brokers import ROOT, free_port, refusing_amqtt, unique, wait_until

SCRIPTS = Path(__file__).resolve().parent / "firmware_scripts"

pytestmark = pytest.mark.micropython


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def broker(request):
    if request.param == "amqtt":
        return request.getfixturevalue("amqtt_broker")
    return request.getfixturevalue("mosquitto_factory")(max_inflight_messages=1)


@pytest.fixture
def fw(micropython_proc, firmware_mpy):
    """fw(script, broker_or_(host, port), prefix, client_id, *args) -> MicroPythonProcess."""

    def start(script, where, prefix, cid, *args):
        host, port = (where.host, where.port) if hasattr(where, "host") else where
        return micropython_proc(SCRIPTS / script, ROOT, firmware_mpy, host, port, prefix, cid,
                                *args)

    return start


def assert_puback(broker, cid):
    """amqtt: the broker got the PUBACK of every QoS 1 message it sent to cid."""
    if broker.name == "amqtt":
        wait_until(lambda: broker.inflight_out(cid) == 0, 3, what=f"PUBACKs from {cid}")


# --------------------------------------------------------------------------- heap
# --------------------------------------------------------------------------- publish
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_received_by_paho(broker, fw, paho_client, qos):
    prefix, cid = unique("tl"), unique("dev")
    sub = paho_client(broker, f"{prefix}/up")
    p = fw("mqtt_pub.py", broker, prefix, cid, qos, 3)
    p.expect(r"^CONNECTED sp=0$")
    for i in range(3):
        p.expect(rf"^PUB {i} pid={i + 1 if qos else 0} pending={i + 1 if qos else 0}$")
    p.expect(r"^DONE pending=0$")
    msgs = sub.wait_count(3)
    assert [m.payload for m in msgs] == ["m0-été".encode(), b"m1", b"m2"]
    if broker.name == "mosquitto":  # amqtt 0.12 delivers at the subscription's QoS
        assert [m.qos for m in msgs] == [qos] * 3
    assert p.wait_exit() == 0, p.output()


# --------------------------------------------------------------------------- subscribe
def test_subscribe_receives_qos1_and_pubacks(broker, fw, paho_client):
    prefix, cid = unique("tl"), unique("dev")
    p = fw("mqtt_sub.py", broker, prefix, cid, 3)
    p.expect(r"^READY granted=1$")
    pub = paho_client(broker)
    for i in range(3):
        pub.publish(f"{prefix}/down", f"d{i}", qos=1)
    for i in range(3):
        p.expect(rf"^GOT {prefix}/down d{i} 0$")
    p.expect(r"^DONE got=3$")
    assert p.wait_exit() == 0, p.output()



def test_a_refused_subscribe_is_asked_again(fw, paho_client):
    """A SUBSCRIBE the broker refuses (SUBACK 0x80, as NATS's MQTT listener
    does for a while after a node of its cluster died) is kept: 3 s later the
    client subscribes again (firmware/mqtt.py), and once granted the filter's
    messages arrive (here the retained one). amqtt refuses the first SUBSCRIBE
    of the filter; before, the client forgot a refused filter for good."""
    broker, state = refusing_amqtt("/down")
    broker.start()
    try:
        prefix, cid = unique("tl"), unique("dev")
        p = fw("mqtt_sub.py", broker, prefix, cid, 1)
        p.expect(r"^READY granted=128$")
        pub = paho_client(broker)
        pub.publish(f"{prefix}/down", "kept", qos=1, retain=True)
        p.expect(rf"^GOT {prefix}/down kept 1$")
        p.expect(r"^DONE got=1$")
        assert state["asked"] == 2
        assert p.wait_exit() == 0, p.output()
    finally:
        broker.close()

def test_out_of_heap_on_an_inbound_message_reconnects(broker, fw, paho_client):
    """A MemoryError while an inbound message is handled (on a board: reading
    a receipt into a fragmented heap) drops the connection instead of
    ending the program; the client connects again and gets the next one."""
    prefix, cid = unique("tl"), unique("dev")
    p = fw("mqtt_nomem.py", broker, prefix, cid)
    p.expect(r"^READY granted=1$")
    pub = paho_client(broker)
    pub.publish(f"{prefix}/down", "boom", qos=1)
    p.expect(r"^NOMEM$")
    p.expect(r"^RECONNECTED granted=1$")
    pub.publish(f"{prefix}/down", "after", qos=1)
    p.expect(r"^GOT after$")
    p.expect(r"^DONE got=1$")
    assert p.wait_exit() == 0, p.output()


def test_puback_sent_for_inbound_qos1(broker, fw, paho_client):
    """The firmware acknowledges inbound QoS 1: with amqtt its in-flight table
    empties; with mosquitto (one message in flight) the later ones get through."""
    prefix, cid = unique("tl"), unique("dev")
    p = fw("mqtt_sub.py", broker, prefix, cid, 4)
    p.expect(r"^READY granted=1$")
    pub = paho_client(broker)
    pub.publish(f"{prefix}/down", "first", qos=1)
    p.expect(rf"^GOT {prefix}/down first 0$")
    assert_puback(broker, cid)
    pub.publish(f"{prefix}/down", "kept", qos=1, retain=True)
    for i in range(2):
        pub.publish(f"{prefix}/down", f"n{i}", qos=1)
    p.expect(rf"^GOT {prefix}/down kept 0$")
    p.expect(rf"^GOT {prefix}/down n1 0$")
    assert_puback(broker, cid)
    p.expect(r"^DONE got=4$")
    assert p.wait_exit() == 0, p.output()


def test_unsubscribe_stops_delivery_and_is_not_restored(broker, fw, paho_client):
    """After UNSUBSCRIBE (its UNSUBACK awaited) nothing more comes on that
    topic, and a reconnect (broker restart) restores only the other one.
    paho waits for each PUBACK before the next publish, so the broker handles
    them in order: "b" arriving with no "a" before it means "a" was dropped."""
    prefix, cid = unique("tl"), unique("dev")
    p = fw("mqtt_unsub.py", broker, prefix, cid)
    p.expect(r"^READY$")
    pub = paho_client(broker)
    pub.publish(f"{prefix}/a", "a1", qos=1)
    p.expect(r"^GOT a a1$")
    pub.publish(f"{prefix}/b", "unsub", qos=1)
    p.expect(r"^GOT b unsub$")
    p.expect(r"^UNSUB connected=1$")
    pub.publish(f"{prefix}/a", "a2", qos=1)
    pub.publish(f"{prefix}/b", "b2", qos=1)
    p.expect(r"^GOT b b2$")
    broker.stop()
    p.expect(r"^DOWN$", timeout=10)
    broker.start()
    p.expect(r"^UP reconnects=1$", timeout=10)
    pub.wait_for(lambda c: c.connects >= 2, 10, what="paho back")
    pub.publish(f"{prefix}/a", "a3", qos=1)
    pub.publish(f"{prefix}/b", "stop", qos=1)
    p.expect(r"^GOT b stop$", timeout=10)
    p.expect(r"^DONE$")
    assert p.wait_exit() == 0, p.output()
    assert [ln for ln in p.lines if ln.startswith("GOT a")] == ["GOT a a1"], p.output()


# --------------------------------------------------------------------------- keepalive
def test_keepalive_pings_keep_connection(broker, fw, paho_client):
    """keepalive=2 s and 5.5 s idle: PINGREQ/PINGRESP keep the connection (a broker
    drops a silent client after 3 s and publishes its will)."""
    prefix, cid = unique("tl"), unique("dev")
    status = paho_client(broker, f"{prefix}/status")
    p = fw("mqtt_keepalive.py", broker, prefix, cid, 5500)
    p.expect(r"^READY$")
    m = p.expect(r"^IDLE ms=\d+ pongs=(\d+)$", timeout=12)
    assert int(m[1]) >= 4, p.output()  # a PINGREQ answered at least every keepalive/2
    paho_client(broker).publish(f"{prefix}/down", "late", qos=1)
    p.expect(r"^GOT late ")
    assert p.wait_exit() == 0, p.output()
    assert b"offline" not in status.payloads(), "the broker dropped the client: will published"


# --------------------------------------------------------------------------- last will
def test_last_will_published_retained_when_killed(broker, fw, paho_client):
    prefix, cid = unique("tl"), unique("dev")
    topic = f"{prefix}/status"
    status = paho_client(broker, topic)
    p = fw("mqtt_will.py", broker, prefix, cid)
    p.expect(r"^READY pending=0$")
    status.wait_for(lambda c: c.payloads() == [b"online"], 5, what="online")
    p.kill()  # power cut: no DISCONNECT
    status.wait_for(lambda c: c.payloads() == [b"online", b"offline"], 10, what="the will")
    late = paho_client(broker, topic)  # a new subscriber gets the retained will
    msgs = late.wait_count(1, timeout=5)
    # (amqtt 0.12 may send a retained message twice to a new client)
    assert {(m.payload, m.retain) for m in msgs} == {(b"offline", True)}, msgs


# --------------------------------------------------------------------------- reconnect
def test_reconnect_after_broker_restart(broker, fw, paho_client):
    prefix, cid = unique("tl"), unique("dev")
    up = f"{prefix}/up"
    # persistent session: mosquitto keeps what the firmware publishes while we are away
    sub = paho_client(broker, up, client_id=unique("paho"), clean_session=False)
    p = fw("mqtt_reconnect.py", broker, prefix, cid)
    p.expect(r"^READY$")
    p.expect(r"^GOT up hb-2$", timeout=5)  # echo through the broker works
    broker.stop()
    p.expect(r"^DOWN ", timeout=5)
    offline = [int(p.expect(r"^PUB hb-(\d+) pid=\d+ offline$", timeout=5)[1]) for _ in range(3)]
    broker.start()
    m = p.expect(r"^UP sp=0 reconnects=1 failures=(\d+) resent=(\d+) pending=\d+$", timeout=10)
    failures, resent = int(m[1]), int(m[2])
    assert 1 <= failures <= 30, p.output()  # retried with backoff while the broker was down
    assert resent >= len(offline), p.output()  # unacked + offline QoS 1 sent again (DUP)
    ctl = paho_client(broker)
    ctl.publish(f"{prefix}/down", "after-restart", qos=1)
    p.expect(r"^GOT down after-restart$", timeout=10)  # re-subscribed
    # our subscriber is back too (it re-subscribes itself): a fresh heartbeat reaches it
    sub.wait_for(lambda c: c.connects >= 2 and c.subscribed >= 2, 10, what="paho back")
    # a heartbeat published after it came back reaches it (one published before
    # that is lost on amqtt, which keeps nothing for an offline session; the
    # script's output can lag, so wait on what the subscriber receives)
    newest = max(offline)
    sub.wait_for(lambda c: any(int(x[3:]) > newest for x in c.payloads() if x[:3] == b"hb-"),
                 10, what="a heartbeat published after the restart")
    ctl.publish(f"{prefix}/down", "stop", qos=1)
    m = p.expect(r"^DONE last=(\d+) pending=0 reconnects=1 ", timeout=10)
    last = int(m[1])
    assert p.wait_exit() == 0, p.output()
    echoed = {ln.split()[2] for ln in p.lines if ln.startswith("GOT up ")}
    missing = [i for i in offline if f"hb-{i}" not in echoed]
    assert not missing, f"offline messages not delivered: {missing}\n{p.output()}"
    if broker.persistent:  # nothing lost at all: before, during and after the outage
        want = {f"hb-{i}".encode() for i in range(1, last + 1)}
        sub.wait_for(lambda c: want <= set(c.payloads()), 10, what="every heartbeat")


# --------------------------------------------------------------------------- oversize
def test_oversize_inbound_skipped(broker, fw, paho_client):
    """max_packet=1024: a 60 kB PUBLISH (it could not even be allocated in the
    64 KiB heap) is skipped and PUBACKed, the next message still arrives."""
    if broker.name == "amqtt":  # the shipped limits refuse a 60 kB packet at the broker
        from gateway.broker.embedded import BrokerLimits

        broker.limits = BrokerLimits(max_packet_size=128 * 1024)
        broker.restart()
    prefix, cid = unique("tl"), unique("dev")
    p = fw("mqtt_oversize.py", broker, prefix, cid)
    p.expect(r"^READY$")
    pub = paho_client(broker)
    down = f"{prefix}/down"
    pub.publish(down, "first", qos=1)
    pub.publish(down, b"x" * 60000, qos=1)
    pub.publish(down, b"y" * 5000, qos=0)
    pub.publish(down, "last", qos=1)
    p.expect(r"^GOT first len=5$")
    p.expect(r"^GOT last len=4$")
    p.expect(r"^DONE got=2 dropped=2$")
    assert_puback(broker, cid)
    assert p.wait_exit() == 0, p.output()


# --------------------------------------------------------------------------- protocol edge cases
def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    b0 = exact(1)[0]
    rl, shift = 0, 0
    while True:
        b = exact(1)[0]
        rl |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return b0, exact(rl)


def _wait_closed(conn: socket.socket) -> None:
    """Until the client closes (EOF, or RST when it left bytes unread)."""
    try:
        while conn.recv(64):
            pass
    except ConnectionResetError:
        pass


class FakeBroker(threading.Thread):
    """Scripted MQTT peer, one step per accepted connection."""

    def __init__(self, steps):
        super().__init__(daemon=True)
        self.port = free_port()
        self.srv = socket.create_server(("127.0.0.1", self.port))
        self.srv.settimeout(10)
        self.steps = steps
        self.seen: list[tuple[int, bytes]] = []
        self.connects: list[bytes] = []
        self.error: BaseException | None = None

    def run(self):
        try:
            for step in self.steps:
                conn, _ = self.srv.accept()
                with conn:
                    conn.settimeout(10)
                    b0, connect = _read_packet(conn)
                    assert b0 == 0x10
                    self.connects.append(connect)
                    step(self, conn)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.srv.close()

    def finished(self, p) -> None:
        """The script `p` exited 0 and every step ran without error."""
        assert p.wait_exit() == 0, p.output()
        self.join(5)
        assert self.error is None, repr(self.error)


def test_resend_dup_same_pid_and_malformed_input(fw):
    """Unacked QoS 1 resent with DUP and the same packet id after a reconnect; a
    malformed packet (5-byte remaining length, topic longer than the packet) or a
    refused CONNACK is an error the robust client survives, never a crash."""

    def no_ack(fb, conn):
        conn.sendall(b"\x20\x02\x00\x00")
        fb.seen.append(_read_packet(conn))  # the PUBLISH, left unacked

    def ack_then_bad_length(fb, conn):
        conn.sendall(b"\x20\x02\x00\x00")
        b0, body = _read_packet(conn)
        fb.seen.append((b0, body))
        conn.sendall(b"\x40\x02" + body[-3:-1])  # PUBACK (pid precedes the 1-byte payload)
        conn.sendall(b"\x30\xff\xff\xff\xff\x7f")  # remaining length in 5 bytes
        _wait_closed(conn)

    def refuse(fb, conn):
        conn.sendall(b"\x20\x02\x00\x05")  # not authorized
        _wait_closed(conn)

    def bad_topic_length(fb, conn):
        conn.sendall(b"\x20\x02\x00\x00")
        conn.sendall(b"\x30\x05" + struct.pack("!H", 200) + b"abc")
        _wait_closed(conn)

    fb = FakeBroker([no_ack, ack_then_bad_length, refuse, bad_topic_length])
    fb.start()
    p = fw("mqtt_fake.py", ("127.0.0.1", fb.port), "tl", unique("dev"), 3)
    p.expect(r"^UP reconnects=0 failures=0 resent=0 pending=0$")
    p.expect(r"^PUB pid=1$")
    p.expect(r"^DOWN OSError \d+ pending=1$")
    p.expect(r"^UP reconnects=1 failures=0 resent=1 pending=1$")
    p.expect(r"^DOWN MQTTError 257 pending=0$")  # ERR_PROTOCOL
    p.expect(r"^UP reconnects=2 failures=1 resent=1 pending=0$")  # after the refusal
    p.expect(r"^DOWN MQTTError 257 pending=0$")
    p.expect(r"^DONE downs=3 pending=0 failures=1$")
    fb.finished(p)
    (b0a, first), (b0b, again) = fb.seen
    assert b0a == 0x32 and b0b == 0x3A  # QoS 1, then QoS 1 + DUP
    assert first == again  # same topic, same packet id, same payload


def test_unsubscribe_encoding(fw):
    """UNSUBSCRIBE is packet type 0xA2 (flags 0010) with packet id 0xFFFF and
    the topic filter; the client waits for the UNSUBACK (0xB0) and goes on."""

    def step(fb, conn):
        conn.sendall(b"\x20\x02\x00\x00")
        for _ in range(2):  # SUBSCRIBE a and b (in either order)
            fb.seen.append(_read_packet(conn))
            conn.sendall(b"\x90\x03\xff\xff\x01")
        conn.sendall(b"\x30\x0b" + struct.pack("!H", 4) + b"tl/b" + b"unsub")
        fb.seen.append(_read_packet(conn))  # UNSUBSCRIBE
        conn.sendall(b"\xb0\x02\xff\xff")
        conn.sendall(b"\x30\x0a" + struct.pack("!H", 4) + b"tl/b" + b"stop")
        fb.seen.append(_read_packet(conn))  # DISCONNECT
        _wait_closed(conn)

    fb = FakeBroker([step])
    fb.start()
    p = fw("mqtt_unsub.py", ("127.0.0.1", fb.port), "tl", unique("dev"))
    p.expect(r"^READY$")
    p.expect(r"^UNSUB connected=1$")
    p.expect(r"^GOT b stop$")
    p.expect(r"^DONE$")
    fb.finished(p)
    subs = sorted(fb.seen[:2])
    assert subs == [(0x82, b"\xff\xff\x00\x04tl/a\x01"), (0x82, b"\xff\xff\x00\x04tl/b\x01")]
    assert fb.seen[2:] == [(0xA2, b"\xff\xff\x00\x04tl/a"), (0xE0, b"")]


def test_connect_encoding_user_password_will(fw):
    """CONNECT carries the clean-session, will (QoS 1, retained), user name and
    password flags, the keepalive and the payload fields in MQTT 3.1.1 order; a
    200-byte PUBLISH has a 2-byte remaining length; DISCONNECT ends it."""

    def step(fb, conn):
        conn.sendall(b"\x20\x02\x00\x00")
        fb.seen.append(_read_packet(conn))  # PUBLISH
        fb.seen.append(_read_packet(conn))  # DISCONNECT
        _wait_closed(conn)

    fb = FakeBroker([step])
    fb.start()
    cid = unique("dev")
    p = fw("mqtt_connect.py", ("127.0.0.1", fb.port), "tl", cid)
    p.expect(r"^CONNECTED sp=0$")
    p.expect(r"^PUB pid=0$")
    p.expect(r"^DONE connected=0$")
    fb.finished(p)

    def s(b: bytes) -> bytes:
        return struct.pack("!H", len(b)) + b

    assert fb.connects == [b"\x00\x04MQTT\x04" + bytes([0xC0 | 0x20 | 0x08 | 0x04 | 0x02])
                           + struct.pack("!H", 300) + s(cid.encode()) + s(b"tl/status")
                           + s(b"offline") + s("u\u00e9".encode()) + s(b"p" * 130)]
    (b0, publish), (b0d, disconnect) = fb.seen
    assert (b0, publish) == (0x30, s(b"tl/up") + b"x" * 200)
    assert (b0d, disconnect) == (0xE0, b"")
