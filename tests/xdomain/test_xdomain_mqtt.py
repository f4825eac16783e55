"""Proofs over MQTT (docs/PROTOCOL.md, "Chain queries"): the relayer with no
data folder, reading both domains from their gateways' answers on their
brokers; a gateway answering bad queries with reason codes and staying up;
a lying answer (a tampered packet with its genuine proof) refused by the
receiving chain."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.broker.embedded import parse_url
from gateway.db.genesis_files import create_domain, write_key
from gateway.db.store import Store, open_ledger
from gateway.ledger import consensus, keys, state
from gateway.node.config import DB_FILE, GatewayConfig
from gateway.node.queries import Answerer, QueryLink, QueryServer
from gateway.xdomain import relayer
from shared import cbor, header, reasons, stateproof, txdecode
from shared import chainquery as cq
from shared import tx as txm
from shared import xpacket as xp
from tests.support.brokers import free_port
from tests.support.gwtest import Device
from tests.support.waits import lines, wait_line
from tests.xdomain.test_xdomain_e2e import A, B, Gateway
from tools.build import tool
from tools.failover import Brokers
from tools.relay import Seq, remote_side, submitter
from tools.relay import run as relay_run
from tools.remote_store import QueryClient, RemoteError, RemoteStore
from tools.submit import SubmitError, submit

RELAYER = Device("relayer")


def _create_clients(a: Gateway, b: Gateway) -> None:
    """Each authority creates its client of the other domain (in-process:
    the set-up, not what is tested here)."""
    for at, of in ((b, a), (a, b)):
        with of.store() as s:
            head = s.head()
            assert head is not None
            cert = s.certificate(head.height)
            sched = cbor.loads(s.kv_range(keys.VALSETS, 1)[0][1])
        vs = consensus.set_at([(h, consensus.ValidatorSet(k, tuple(p))) for h, k, p in sched],
                              head.height)
        owner = Device("authority-" + at.domain, at.domain)
        owner.seq = 1 << 40
        r = at.send(owner.make(txdecode.TYPE_CLIENT_CREATE, {
            1: of.domain, 2: vs.threshold, 3: list(vs.pubkeys), 4: 3600,
            5: head.header_bytes, 6: cert}))
        assert r.ok and r.status == 0, r


def _send(a: Gateway, alice: Device, to: bytes, amount: int, t_height: int = 0,
          t_time: int = 0) -> None:
    r = a.send(alice.make(txdecode.TYPE_SEND, {1: B, 2: to, 3: amount, 4: t_height,
                                               5: t_time}))
    assert r.ok and r.status == 0, r


def test_relay_with_no_data_folders_credits_acks_and_refunds(
        two: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    a, b = two
    alice, bob = Device("alice", A), Device("bob", B)
    alice.seq = bob.seq = 1 << 30
    _create_clients(a, b)
    write_key(tmp_path / "relayer.key", RELAYER.priv)
    head_b = b.head()[0]
    _send(a, alice, bob.id, 100, t_time=2_000_000_000)
    assert a.balance(alice.id) == 900

    def relay(*extra: str) -> subprocess.Popen:  # no --from-dir / --to-dir
        return subprocess.Popen(
            [tool("thingledger"), "relay", "--from", A, "--to", B, "--from-broker", a.url,
             "--to-broker", b.url, "--key", str(tmp_path / "relayer.key"),
             "--interval", "0.5", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    rel = relay()
    seen: list[str] = []
    try:
        q = lines(rel)
        wait_line(q, r"relay: recv +in dom-b packet 1 ok", 30, seen)
        wait_line(q, r"relay: ack +in dom-a packet 1 ok", 30, seen)
    finally:
        rel.send_signal(signal.SIGINT)
        rel.wait(timeout=30)
    assert b.balance(bob.id) == 600 and a.balance(alice.id) == 900
    assert a.kv(xp.packet_key(B, 1)) is None  # closed: the escrow burnt
    assert cbor.loads(b.kv(xp.receipt_key(A, 1)) or b"") == [xp.ACK_OK, ""]

    # a timeout refund, again read over the brokers only
    head_b = b.head()[0]
    _send(a, alice, bob.id, 50, t_height=head_b + 1)
    assert a.balance(alice.id) == 850
    r = b.send(bob.transfer(txm.device_id(b.auth_pub), 1))
    assert r.ok and b.head()[0] > head_b
    rel = relay("--once")
    out, _ = rel.communicate(timeout=60)
    assert rel.returncode == 0 and "timeout in dom-a packet 2 ok" in out, out
    assert "recv    in dom-b packet 2" not in out, out
    assert a.balance(alice.id) == 900 and b.balance(bob.id) == 599
    assert b.kv(xp.receipt_key(A, 2)) is None


class Raw:
    """A bare MQTT requester: what a careless or hostile one may send."""

    def __init__(self, url: str, domain: str, who: str) -> None:
        self.topic = cq.request_topic(domain, who)
        self.got: list[bytes] = []
        self.cond = threading.Condition()
        ready = threading.Event()
        host, port = parse_url(url)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=who + "-raw",
                        protocol=mqtt.MQTTv311)
        c.on_subscribe = lambda *_: ready.set()
        c.on_message = self._on
        c.connect(host, port)
        c.loop_start()
        c.subscribe(cq.answer_topic(domain, who), qos=0)
        assert ready.wait(10)
        self.c = c

    def _on(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append(bytes(m.payload))
            self.cond.notify_all()

    def ask(self, payload: bytes) -> tuple[Any, ...]:
        with self.cond:
            n = len(self.got)
            self.c.publish(self.topic, payload, qos=0)
            assert self.cond.wait_for(lambda: len(self.got) > n, 10), "no answer"
            return cq.parse_answer(self.got[n])

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_a_gateway_answers_bad_queries_with_reasons_and_stays_up(tmp_path: Path) -> None:
    a = Gateway(tmp_path, A, {Device("alice", A).pub: 1000})
    raw = Raw(a.url, A, "0123abcd")
    try:
        bad = [(b"\xff\x00garbage", reasons.BAD_CBOR, None),
               (b"\x00" * (cq.MAX_REQUEST + 1), reasons.TOO_LARGE, None),
               (cbor.dumps([1, 2]), reasons.BAD_QUERY, "not-a-map"),
               (cq.request("drop-table", b"r1"), reasons.BAD_QUERY, "unknown-op"),
               (cq.request("block", b"r2", -1), reasons.BAD_QUERY, "bad-argument"),
               (cq.request("receipt", b"r3", b"short"), reasons.BAD_QUERY, "bad-argument"),
               (cq.request("kv_range", b"r4", b"xp", 10_000), reasons.BAD_QUERY, "bad-limit"),
               (cq.request("txs", b"r5", 1, 5, b"x"), reasons.BAD_QUERY, "bad-cursor"),
               (cq.request("head", b""), reasons.BAD_QUERY, "bad-id")]
        for payload, reason, detail in bad:
            _rid, got_reason, got_detail, result, _ = raw.ask(payload)
            assert (got_reason, result) == (reason, None), (payload[:20], got_reason)
            if detail is not None:
                assert got_detail == detail
        # still up: it answers a good query, and the chain still commits
        rid, reason, _, result, _ = raw.ask(cq.request("head", b"ok"))
        assert (rid, reason) == (b"ok", "") and result[0][0] == a.head()[0]
        alice = Device("alice", A)
        alice.seq = 1 << 30
        r = a.send(alice.transfer(txm.device_id(a.auth_pub), 1))
        assert r.ok and r.status == 0
        assert a.proc.poll() is None
    finally:
        raw.close()
        a.stop()


def test_answers_are_paged_bounded_and_rate_limited(tmp_path: Path) -> None:
    """The answerer over a real chain store, with a clock the test moves."""
    a_dir = tmp_path / "a"
    people = [Device("p%d" % i, A) for i in range(7)]
    create_domain(a_dir, A, {p.pub: 10 for p in people})
    open_ledger(GatewayConfig(domain=A, data_dir=a_dir)).store.close()
    now = [0.0]
    with Store(a_dir / DB_FILE, readonly=True) as s:
        ans = Answerer(s, b"", rate=1.0, burst=3, clock=lambda: now[0])
        leaves: list[bytes] = []
        after = None
        while True:
            _, reason, _, page, more = cq.parse_answer(
                ans.answer("r", cq.request("devices", b"d", None, 3, after)))
            assert reason == "" and len(page) <= 3
            leaves += page
            if not more:
                break
            after = cbor.loads(leaves[-1])[0]
            now[0] += 1.0  # one request a second: within the rate
        assert leaves == [state.leaf(i, r) for i, r in s.devices()] and len(leaves) >= 7
        # a principal's record with its state proof (a supplier's current key)
        now[0] += 1.0
        _, reason, _, got, _ = cq.parse_answer(
            ans.answer("r", cq.request("prove_account", b"p", people[2].id)))
        blk, leaf, proof = got
        assert reason == "" and leaf == state.leaf(people[2].id, dict(s.devices())[people[2].id])
        root = header.decode(blk[4])["state_root"]
        assert stateproof.check_account(root, people[2].id, leaf, proof)
        now[0] += 1.0
        assert cq.parse_answer(ans.answer("r", cq.request("prove_account", b"p", b"short")))[1] \
            == "bad-query"
        now[0] += 10.0
        # a burst over the bucket: refused (retryable), other requesters unaffected
        got = [cq.parse_answer(ans.answer("r", cq.request("head", b"h")))[1] for _ in range(4)]
        assert got.count(reasons.RATE_LIMITED) >= 1 and got[0] == ""
        assert cq.parse_answer(ans.answer("s", cq.request("head", b"h")))[1] == ""
        now[0] += 10.0
        assert cq.parse_answer(ans.answer("r", cq.request("head", b"h")))[1] == ""


class LyingStore:
    """A's store as a lying gateway serves it: packet 3's amount raised in
    the value (and the listing), its proof the genuine one."""

    def __init__(self, store: Store) -> None:
        self.s = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s, name)

    @staticmethod
    def _lie(v: bytes) -> bytes:
        p = cbor.loads(v)
        if p.get(3) == 3:
            p[6] = 1_000
        return cbor.dumps(p)

    def kv_range(self, prefix: bytes, limit: int = 1000,
                 start: bytes = b"") -> list[tuple[bytes, bytes]]:
        rows = self.s.kv_range(prefix, limit, start)
        return [(k, self._lie(v) if k.startswith(xp.PACKET) else v) for k, v in rows]

    def prove_kv(self, key: bytes) -> Any:
        got = self.s.prove_kv(key)
        if got is None or got[1] is None or not key.startswith(xp.PACKET):
            return got
        return got[0], self._lie(got[1]), got[2]


def test_a_lying_answer_is_refused_by_the_receiving_chain(
        two: tuple[Gateway, Gateway], amqtt_broker: Any) -> None:
    a, b = two
    alice, bob = Device("alice", A), Device("bob", B)
    alice.seq = bob.seq = 1 << 30
    _create_clients(a, b)
    for seq in (1, 2, 3):
        _send(a, alice, bob.id, 10 * seq, t_time=2_000_000_000)
        assert a.kv(xp.packet_key(B, seq)) is not None
    r = b.send(RELAYER.make(txm.TYPE_REGISTER, {1: RELAYER.pub}, domain=B))
    assert r.ok
    # a liar answers A's queries on its own broker, from A's data folder
    liar_url = amqtt_broker.url
    liar = QueryLink(QueryServer(A, lambda: LyingStore(Store(a.dir / DB_FILE, readonly=True)),
                                 print, genesis=(a.dir / "genesis.toml").read_bytes()),
                     liar_url, "liar")
    liar.start()
    assert liar.ready.wait(10)
    key = type("K", (), {"id": RELAYER.id, "private": RELAYER.priv})()
    try:
        sa = remote_side(A, liar_url, key)
        sb = remote_side(B, b.url, key)
        assert isinstance(sa.store, RemoteStore) and sb.authority == b.auth_pub
        seq = Seq()
        rel = relayer.Relayer(relayer.Chain(A, sa.store), relayer.Chain(B, sb.store),
                              relayer.RelayKey(RELAYER.priv, RELAYER.id, seq),
                              submitter({A: sa, B: sb}, 20))
        acts = rel.run_once().actions
        recv = {x.seq: x for x in acts if x.what == relayer.RECV}
        assert recv[1].ok and recv[2].ok, acts  # the honest answers: credited
        assert not recv[3].ok and recv[3].reason == reasons.BAD_PROOF, acts
        assert b.balance(bob.id) == 500 + 10 + 20
        assert b.kv(xp.receipt_key(A, 3)) is None  # nothing of the lie kept
        sa.store.close()
        sb.store.close()
    finally:
        liar.stop()
    # a gateway answering garbage: the relayer process skips the pass, it does not die
    assert a.send(RELAYER.make(txm.TYPE_REGISTER, {1: RELAYER.pub}, domain=A)).ok
    garbage = QueryLink(QueryServer(A, lambda: Garbage(Store(a.dir / DB_FILE, readonly=True)),
                                    print, genesis=(a.dir / "genesis.toml").read_bytes()),
                        liar_url, "garbage")
    garbage.start()
    assert garbage.ready.wait(10)
    said: list[str] = []
    try:
        sa = remote_side(A, liar_url, key)
        sb = remote_side(B, b.url, key)
        assert relay_run(sa, sb, key, once=True, timeout=10, line=said.append) == 0
        assert any(x.startswith("relay: pass skipped: bad-cbor") for x in said), said
    finally:
        garbage.stop()


class Garbage(LyingStore):
    """Packets that are not CBOR."""

    def kv_range(self, prefix: bytes, limit: int = 1000,
                 start: bytes = b"") -> list[tuple[bytes, bytes]]:
        rows = self.s.kv_range(prefix, limit, start)
        return [(k, b"\xff" if k.startswith(xp.PACKET) else v) for k, v in rows]


class WrongHash(LyingStore):
    """A head whose hash is not its header's SHA-256."""

    def head(self) -> Any:
        return dataclasses.replace(self.s.head(), hash=bytes(32))


def test_a_remote_store_refuses_what_does_not_add_up(amqtt_broker: Any, tmp_path: Path) -> None:
    """A block whose hash is not its header's, or nobody answering: errors,
    never values."""
    url = amqtt_broker.url
    create_domain(tmp_path / "a", A, {Device("alice", A).pub: 10})
    open_ledger(GatewayConfig(domain=A, data_dir=tmp_path / "a")).store.close()
    db = tmp_path / "a" / DB_FILE
    q = QueryClient(url, A, "abc", timeout=1.0)
    try:
        with pytest.raises(RemoteError) as e:
            RemoteStore(q).head()
        assert e.value.reason == "no-answer"
        srv = QueryLink(QueryServer(A, lambda: WrongHash(Store(db, readonly=True)), print),
                        url, "srv")
        srv.start()
        assert srv.ready.wait(10)
        try:
            with pytest.raises(RemoteError) as e:
                RemoteStore(q).head()
            assert (e.value.reason, e.value.detail) == ("bad-answer", "block hash")
            rs = RemoteStore(q)
            assert rs.get_block(0) is not None  # the honest answers still serve
            alice = Device("alice", A).id
            assert rs.device(alice) == dict(rs.devices())[alice] is not None
            assert rs.device(bytes(16)) is None and rs.device(b"\xff" * 16) is None
        finally:
            srv.stop()
    finally:
        q.close()


class BigValues:
    """A store whose values are large (contract code, say)."""

    def __init__(self, sizes: list[int]) -> None:
        self.rows = [(b"c" + bytes([i]), bytes(n)) for i, n in enumerate(sizes)]

    def kv_range(self, prefix: bytes, limit: int = 1000,
                 start: bytes = b"") -> list[tuple[bytes, bytes]]:
        return [r for r in self.rows if r[0] >= start][:limit]

    def prove_kv(self, key: bytes) -> None:
        return None


def test_pages_stay_under_the_answer_limit() -> None:
    ans = Answerer(BigValues([5000, 5000, 5000, 20_000]), b"")  # type: ignore[arg-type]
    got: list[bytes] = []
    after = None
    reason = ""
    for _ in range(4):
        out = ans.answer("r", cq.request("kv_range", b"k", b"c", 10, after))
        assert len(out) <= cq.MAX_ANSWER
        _, reason, detail, page, more = cq.parse_answer(out)
        if reason:
            break
        assert 0 < len(page) <= 2 and more  # two of 5000 fit, a third does not
        got += [k for k, _ in page]
        after = page[-1][0]
    assert got == [b"c\x00", b"c\x01", b"c\x02"]
    assert (reason, detail) == (reasons.TOO_LARGE, "item over %d bytes" % cq.MAX_ANSWER)


def test_a_silent_dropped_or_unreachable_broker_is_passed_over_for_the_next(
        tmp_path: Path, mosquitto_broker: Any, amqtt_broker: Any) -> None:
    """Several brokers of one domain (tools/failover.py): mosquitto, where
    another reader of A's chain answers queries, and the broker of A's
    gateway. Unreachable, dropped and silent brokers are passed over for
    the next, for chain queries and for submissions."""
    a = Gateway(tmp_path, A, {Device("alice", A).pub: 1000})
    dead = "mqtt://127.0.0.1:%d" % free_port()
    silent = amqtt_broker.url  # a broker where no gateway of A answers
    other = QueryLink(QueryServer(A, lambda: Store(a.dir / DB_FILE, readonly=True), print,
                                  genesis=(a.dir / "genesis.toml").read_bytes()),
                      mosquitto_broker.url, "other")
    other.start()
    assert other.ready.wait(10)
    q = None
    try:
        brokers = Brokers(",".join([dead, mosquitto_broker.url, a.url]))
        q = QueryClient(brokers, A, "abc", timeout=30.0)
        assert q.url == mosquitto_broker.url  # the first one refused the connection
        assert brokers.passes == 1 and brokers.passed_over[0].startswith(dead + ": cannot reach")
        rs = RemoteStore(q)
        assert rs.genesis().domain == A and brokers.passes == 1
        # mosquitto goes down: the request moves to A's gateway at once
        mosquitto_broker.stop()
        head = rs.head()
        assert head is not None and head.hash == a.head()[1]
        assert q.url == a.url and brokers.order()[0] == a.url
        assert brokers.since(1) == [mosquitto_broker.url + ": the connection dropped"]
        q.close()
        # a silent broker first: no answer within the timeout, then the next
        q = QueryClient(",".join([silent, a.url]), A, "abc", timeout=1.0)
        assert q.url == silent
        assert RemoteStore(q).get_block(0) is not None and q.url == a.url
        assert q.brokers.since(0) == [silent + ": no answer to block within 1 s"]
        assert RemoteStore(q).get_block(0) is not None and q.brokers.passes == 1  # kept
        q.close()
        # nobody answers: no-answer, naming each broker
        q = QueryClient([dead, silent], A, "abc", timeout=1.0)
        with pytest.raises(RemoteError) as e:
            RemoteStore(q).head()
        assert e.value.reason == "no-answer" and dead in e.value.detail \
            and silent in e.value.detail, e.value
        # submissions: the silent broker gives no answer, A's gateway commits
        alice = Device("alice", A)
        alice.seq = 1 << 30
        subs = Brokers([silent, a.url])
        r = submit(subs, A, alice.transfer(txm.device_id(a.auth_pub), 1), a.auth_pub,
                       timeout=3.0)
        assert r.ok and r.status == 0 and subs.order()[0] == a.url, r
        assert subs.passes == 1 and subs.passed_over[0].startswith(silent + ": no answer")
        assert a.balance(alice.id) == 999
        with pytest.raises(SubmitError) as se:
            submit(Brokers([dead]), A, alice.transfer(txm.device_id(a.auth_pub), 1),
                       a.auth_pub, timeout=3.0)
        assert dead in str(se.value)
        with pytest.raises(ValueError):
            Brokers("%s,,%s" % (a.url, silent))
    finally:
        if q is not None:
            q.close()
        other.stop()
        a.stop()
