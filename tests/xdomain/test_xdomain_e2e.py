"""Two domains, each its own `thingledger run --no-boards` gateway on its own
embedded broker (both in `authority` mode: a quorum of 1, the same
certificate code as a quorum's), a `thingledger relay` process between them,
and the CLI: a transfer A -> B committed and provable; a refund on timeout
while the relayer is stopped; forged headers (wrong key, too few signatures,
wrong domain id), a forged and a replayed packet proof, each refused by the
running gateway with its reason and nothing committed; a client frozen by two
conflicting headers of A."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from gateway.db.genesis_files import create_domain, write_key
from gateway.db.store import Store
from gateway.market.ledger import rules as market
from gateway.node.config import DB_FILE, KEY_FILE
from shared import (
    cbor,
    commit,
    commit_gateway,
    errors,
    header,
    merkle,
    reasons,
    stream,
    topics,
    txdecode,
)
from shared import tx as txm
from shared import xpacket as xp
from tests.support.brokers import free_port
from tests.support.gwtest import Device, key
from tests.support.waits import lines, wait_line
from tools.build import tool
from tools.submit import next_seq, submit
from tools.xdomain_demo import interrupt

A, B = "dom-a", "dom-b"


class Gateway:
    def __init__(self, root: Path, domain: str, accounts: dict[bytes, int]) -> None:
        self.domain = domain
        self.dir = root / domain
        self.url = "mqtt://127.0.0.1:%d" % free_port()
        self.auth_priv, self.auth_pub = key("authority-" + domain)
        create_domain(self.dir, domain, accounts, authority_key=self.auth_priv)
        self.proc = subprocess.Popen(
            [tool("thingledger"), "run", "--no-boards", "--no-http", "--data-dir", str(self.dir),
             "--domain", domain, "--listen", self.url, "--block-interval", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.out = lines(self.proc)
        self.seen: list[str] = []
        wait_line(self.out, r"gateway +chain %s at height" % domain, 60, self.seen)

    def store(self) -> Store:
        return Store(self.dir / DB_FILE, readonly=True)

    def head(self) -> tuple[int, bytes]:
        with self.store() as s:
            h = s.head()
            assert h is not None
            return h.height, h.hash

    def kv(self, k: bytes) -> bytes | None:
        with self.store() as s:
            rows = s.kv_range(k, 1)
        return rows[0][1] if rows and rows[0][0] == k else None

    def balance(self, who: bytes) -> int:
        with self.store() as s:
            return dict(s.devices())[who].balance

    def send(self, message: bytes) -> Any:
        return submit(self.url, self.domain, message, self.auth_pub, timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("thingledger"), *args], capture_output=True, text=True,
                          timeout=90)


def _keyfile(path: Path, name: str) -> Path:
    write_key(path, key(name)[0])
    return path


def relay(tmp: Path, a: Gateway, b: Gateway, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [tool("thingledger"), "relay", "--from", A, "--to", B, "--from-dir", str(a.dir),
         "--to-dir", str(b.dir), "--from-broker", a.url, "--to-broker", b.url,
         "--key", str(tmp / "relayer.key"), "--interval", "0.5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_transfer_timeout_forgeries_and_freeze_across_two_running_domains(
        two: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    a, b = two
    alice, bob = Device("alice", A), Device("bob", B)
    _keyfile(tmp_path / "alice.key", "alice")
    _keyfile(tmp_path / "relayer.key", "relayer")
    # each owner (here the authority) creates its client of the other domain
    for at, of in ((b, a), (a, b)):
        r = cli("xdomain", "create", "--data-dir", str(at.dir), "--broker", at.url,
                "--of-dir", str(of.dir), "--key", str(at.dir / KEY_FILE), "--period", "3600")
        assert r.returncode == 0, r.stdout + r.stderr
    r = cli("xdomain", "clients", "--data-dir", str(b.dir))
    assert r.returncode == 0 and "dom-a" in r.stdout and "active" in r.stdout, r.stdout
    # alice sends 100 to bob, the relayer carries it
    r = cli("xdomain", "send", "--data-dir", str(a.dir), "--broker", a.url, "--to", B,
            "--recipient", bob.id.hex(), "--amount", "100", "--timeout-s", "600",
            "--key", str(tmp_path / "alice.key"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert a.balance(alice.id) == 900
    rel = relay(tmp_path, a, b)
    seen: list[str] = []
    try:
        q = lines(rel)
        wait_line(q, r"relay: recv +in dom-b packet 1 ok", 60, seen)
        wait_line(q, r"relay: ack +in dom-a packet 1 ok", 60, seen)
    finally:
        rel.send_signal(signal.SIGINT)
        rel.wait(timeout=30)
    assert b.balance(bob.id) == 600 and a.balance(alice.id) == 900
    # provable: B's receipt of the packet against B's head, itself final under B's set
    with b.store() as s:
        got = s.prove_kv(xp.receipt_key(A, 1))
        assert got is not None
        head, ack, proof = got
        cert = s.certificate(head.height)
    fields = commit.final_header(head.header_bytes, cert, (1, [b.auth_pub], None))
    assert cbor.loads(ack) == [xp.ACK_OK, ""]
    assert xp.proves_receipt(fields["state_root"], {1: A, 3: 1}, ack, proof)
    r = cli("xdomain", "packets", "--data-dir", str(b.dir))
    assert "from dom-a" in r.stdout and "seq 1" in r.stdout, r.stdout

    # timeout: the relayer is stopped while B passes the packet's timeout height
    bh = b.head()[0]
    r = cli("xdomain", "send", "--data-dir", str(a.dir), "--broker", a.url, "--to", B,
            "--recipient", bob.id.hex(), "--amount", "50", "--timeout-height", str(bh + 1),
            "--key", str(tmp_path / "alice.key"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert a.balance(alice.id) == 850
    reply = b.send(txm.make(bob.priv, bob.id, txdecode.TYPE_TRANSFER, B, 7, 0,
                            {1: txm.device_id(b.auth_pub), 2: 1}))
    assert reply.ok and b.head()[0] > bh
    rel = relay(tmp_path, a, b, "--once")
    out, _ = rel.communicate(timeout=90)
    assert rel.returncode == 0 and "timeout in dom-a packet 2 ok" in out, out
    assert a.balance(alice.id) == 900 and b.balance(bob.id) == 599
    assert a.kv(xp.packet_key(B, 2)) is None

    # forgeries at the running gateway of B: refused with their reason, nothing committed
    relayer = Device("relayer", B)
    relayer.seq = 1 << 50
    with a.store() as s:
        ah = s.head()
        assert ah is not None
    f = dict(ah.fields)
    f["height"] += 1

    def update(hb: bytes, cert: list[Any], domain: str = A) -> Any:
        return b.send(relayer.make(txdecode.TYPE_CLIENT_UPDATE, {1: domain, 2: [[hb, cert,
                                                                                  None]]}))

    before = b.head()
    hb = header.encode(f)
    other_priv, other_pub = key("not-a-validator")
    wrong_key = [[0, commit_gateway.vote(other_priv, other_pub, header.block_hash(hb))]]
    rep = update(hb, wrong_key)
    assert (rep.ok, rep.reason) == (False, errors.BAD_SIGNATURE), rep
    rep = update(hb, [])
    assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_PROOF,
                                                "too-few-signatures"), rep
    fc = dict(f, domain="dom-c")
    hc = header.encode(fc)
    rep = update(hc, [[0, commit_gateway.vote(a.auth_priv, a.auth_pub, header.block_hash(hc))]])
    assert (rep.ok, rep.reason, rep.detail) == (False, reasons.WRONG_DOMAIN, "header-domain")
    # the packet of seq 1 again (a replayed proof), then with a forged proof
    latest = cbor.loads(b.kv(xp.client_key(A)))[3]  # type: ignore[arg-type]
    with b.store() as s:
        relayed = [txm.decode(r.message) for r in s.txs_of_type(txdecode.TYPE_RELAY)]
    (first,) = [t for t in relayed if t.body[1] == "recv"]
    with b.store() as s:
        first_height = s.find_tx(first.id)[0].height
    rep = b.send(first.message)  # the relayer's own message again: its old receipt, no more
    assert rep.ok and rep.height == first_height, rep
    rep = b.send(relayer.make(txdecode.TYPE_RELAY, first.body))  # its packet and proof again
    assert (rep.ok, rep.reason, rep.detail) == (False, reasons.DUPLICATE, "received"), rep
    no_timeout = xp.encode(A, B, 4, alice.id, bob.id, 100, 0, 0)
    rep = b.send(relayer.make(txdecode.TYPE_RELAY, {1: "recv", 2: no_timeout, 3: latest, 4: []}))
    assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_TX, "no-timeout"), rep
    pk3 = xp.encode(A, B, 3, alice.id, bob.id, 10_000, 0, 1 << 40)
    rep = b.send(relayer.make(txdecode.TYPE_RELAY,
                              {1: "recv", 2: pk3, 3: latest, 4: [[bytes(32)] * 3, None]}))
    assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_PROOF, "packet-proof"), rep
    assert b.head() == before and b.balance(bob.id) == 599

    # two conflicting headers of A at a trusted height (A's authority signs twice) freeze it
    with a.store() as s:
        trusted_block = s.get_block(latest)
        assert trusted_block is not None
    twin = dict(trusted_block.fields, state_root=b"\x66" * 32)
    tb = header.encode(twin)
    rep = update(tb, [[0, commit_gateway.vote(a.auth_priv, a.auth_pub, header.block_hash(tb))]])
    assert rep.ok and rep.status == 0, rep
    r = cli("xdomain", "client", A, "--data-dir", str(b.dir))
    assert "frozen      yes" in r.stdout and "evidence    height %d" % latest in r.stdout, \
        r.stdout
    rep = b.send(relayer.make(txdecode.TYPE_RELAY,
                              {1: "recv", 2: pk3, 3: latest, 4: [[bytes(32)] * 3, None]}))
    assert (rep.ok, rep.reason) == (False, reasons.CLIENT_FROZEN), rep
    for g in (a, b):
        v = cli("chain", "verify", "--data-dir", str(g.dir))
        assert v.returncode == 0, v.stdout + v.stderr


def _relay(tmp: Path, src: Gateway, dst: Gateway, keyname: str, *extra: str
           ) -> subprocess.Popen:
    return subprocess.Popen(
        [tool("thingledger"), "relay", "--from", src.domain, "--to", dst.domain, "--from-dir",
         str(src.dir), "--to-dir", str(dst.dir), "--from-broker", src.url, "--to-broker",
         dst.url, "--key", str(tmp / (keyname + ".key")), "--interval", "0.5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _total(g: Gateway) -> int:
    with g.store() as s:
        return s.load_state().total_balance()


def test_a_buyer_in_b_buys_readings_of_a_with_the_cli(two: tuple[Gateway, Gateway],
                                                       tmp_path: Path) -> None:
    """`thingledger xdomain buy` in dom-b against sam's offer in dom-a: the
    offer read on dom-b's broker (a relayer bridges it) and proven in dom-b,
    the payment a packet (relayed by a second relayer), the agreement and
    sam's two batch commitments proven and recorded in dom-b (XPURCHASE:
    `xdomain purchases` lists them), the readings read on dom-b's
    broker (a tampered one published first is ignored) and checked against
    the roots; dom-a's operator pays sam; value conserved over both domains,
    both chains verify."""
    a, b = two
    sam, bob = Device("sam", A), Device("bob", B)
    _keyfile(tmp_path / "bob.key", "bob")
    for name in ("relayer", "relayer-ba"):
        _keyfile(tmp_path / (name + ".key"), name)
    for at, of in ((b, a), (a, b)):
        r = cli("xdomain", "create", "--data-dir", str(at.dir), "--broker", at.url,
                "--of-dir", str(of.dir), "--key", str(at.dir / KEY_FILE))
        assert r.returncode == 0, r.stdout + r.stderr
    op = txm.device_id(a.auth_pub)
    rep = a.send(txm.make(a.auth_priv, op, txm.TYPE_CONTRACT_ADMIN, A, next_seq(), 0, {
        1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement", 4: market.AGREEMENT_VERSION,
        5: {"operator": op, "fee_bps": 500}}))
    assert rep.ok and rep.status == 0, rep
    assert a.send(sam.register()).status == 0
    rep = a.send(sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "",
                                           6: 600, 7: 1}))
    assert rep.ok and rep.status == 0, rep
    total = _total(a) + _total(b)
    procs = [_relay(tmp_path, a, b, "relayer", "--bridge"), _relay(tmp_path, b, a, "relayer-ba")]
    relayer_id = Device("relayer").id
    buy = subprocess.Popen(
        # both domains read over their brokers (chain queries), no data folder
        [tool("thingledger"), "xdomain", "buy", "--data-dir", str(tmp_path / "none"),
         "--domain", B, "--broker", b.url, "--of", A, "--of-broker", a.url,
         "--service", "temperature",
         "--quantity", "4", "--max-price", "6", "--via", relayer_id.hex(),
         "--key", str(tmp_path / "bob.key"), "--wait", "90", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(buy)
    seen: list[str] = []
    try:
        q = lines(buy)
        wait_line(q, r"offer %s at 5 proven in dom-b" % sam.id.hex(), 90, seen)
        wait_line(q, r"paid with a packet dom-b -> dom-a: 20 held in dom-a", 90, seen)
        aid = bytes.fromhex(wait_line(q, r"agreement \w{32} proven in dom-b: 4 readings at 5",
                                      90, seen).split()[1])
        wait_line(q, r"listening on tl/dom-b/data/%s/x/dom-a/data/%s/%s$"
                  % (relayer_id.hex(), sam.id.hex(), aid.hex()), 30, seen)
        readings = [stream.reading(sam.priv, sam.id, aid, i, 2100 + i, -2) for i in range(4)]
        tampered = bytearray(readings[0])
        tampered[-1] ^= 1
        host, port = parse_url(a.url)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sam-e2e",
                          protocol=mqtt.MQTTv311)
        pub.connect(host, port)
        pub.loop_start()
        topic = topics.data(A, sam.id.hex() + "/" + aid.hex())
        try:
            pub.publish(topic, bytes(tampered), qos=1).wait_for_publish(10)
            for batch, first in ((0, 0), (1, 2)):
                for r in readings[first:first + 2]:
                    pub.publish(topic, r, qos=1).wait_for_publish(10)
                rep = a.send(sam.make(txm.TYPE_CONTRACT_CALL, {
                    1: market.AGREEMENT, 2: "commit",
                    3: [aid, batch, first, 2, merkle.root(readings[first:first + 2])], 4: 0,
                    5: 50_000}))
                assert rep.ok and rep.status == 0, rep
        finally:
            pub.disconnect()
            pub.loop_stop()
        for i in range(4):
            wait_line(q, r"reading %d: %de-2 verified" % (i, 2100 + i), 90, seen)
        assert buy.wait(timeout=30) == 0, seen
        # dom-b's chain recorded the purchase and both commitments (XPURCHASE)
        assert any(("agreement recorded in dom-b") in x for x in seen), seen
        r = cli("xdomain", "purchases", "--data-dir", str(b.dir))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "in dom-a agreement %s buyer %s supplier %s temperature: 4 at 5, committed 4 " \
            "of 4" % (aid.hex(), bob.id.hex(), sam.id.hex()) in r.stdout, r.stdout
        assert [ln.split()[:4] for ln in r.stdout.splitlines() if "batch" in ln] == [
            ["batch", "0", "readings", "0..1"], ["batch", "1", "readings", "2..3"]], r.stdout
        # dom-a's operator judges both batches from its stream store and pays sam
        paid = 2 * (10 - 10 * 500 // 10_000)  # two batches of 2 at 5, the fee (floor) off
        deadline = time.monotonic() + 60
        while a.balance(sam.id) < paid and time.monotonic() < deadline:
            time.sleep(0.2)
        assert a.balance(sam.id) == paid, seen
        # the payment's ack closed the packet in dom-b: value conserved over both domains
        deadline = time.monotonic() + 60
        while b.kv(xp.packet_key(A, 1)) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b.kv(xp.packet_key(A, 1)) is None
        assert b.balance(bob.id) == 480
        assert _total(a) + _total(b) == total
    finally:
        interrupt(procs)
    for g in (a, b):
        v = cli("chain", "verify", "--data-dir", str(g.dir))
        assert v.returncode == 0, v.stdout + v.stderr
