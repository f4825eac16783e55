"""One MQTT connection per login in the host tools (tools/mqtt_ask.Line;
docs/CROSSDOMAIN.md, "One connection per login").

The mosquitto configuration `thingledger broker export` writes sets
`use_username_as_clientid true`: the client id is the login's username, so a
second connection under a login takes the first one's session over (mosquitto
logs "already connected" and drops the older). The host supplier and the
reseller opened an rx listener, a stream publisher and a connection per
submission (anonymous, which the exported configuration refuses) under one
login. Here a real `thingledger run` gateway serves a domain on a mosquitto
loading the exported passwd and acl, and the tools' flows run over their one
connection: every transaction committed, every reading acknowledged and
received, one connection of the login in mosquitto's log, none taken over.
And the rx listener moves to the next broker of its list when its broker
stops, as a board does."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from gateway import broker as broker_auth
from gateway.db.genesis_files import create_domain, write_key
from gateway.db.store import open_ledger
from gateway.node.config import GatewayConfig
from shared import messages_gateway as mg
from shared import notice, topics
from shared import tx as txm
from tests.support.ba_world import AuthClient
from tests.support.brokers import wait_until
from tests.support.gwtest import key
from tests.support.waits import lines, wait_line
from tools import cli
from tools.build import tool
from tools.keys import KeyPair
from tools.relay import (
    Bridge,
    Seq,
    Side,
    Watch,
    ensure_registered,
    open_side,
    remote_side,
    submitter,
)
from tools.remote_store import RemoteStore
from tools.supplier import Supplier
from tools.xbuy import CrossBuyer

pytestmark = pytest.mark.mosquitto

DOMAIN = "onelogin"
AUTHORITY = key("onelogin-authority")


def keypair(name: str) -> KeyPair:
    priv, pub = key(name)
    return KeyPair(priv, pub)


class Served:
    """A domain whose genesis holds `people`, its mosquitto loading the
    export (passwd, acl, `use_username_as_clientid true`), its gateway a
    `thingledger run` process connected to that mosquitto."""

    def __init__(self, root: Path, factory, people: list[KeyPair], domain: str = DOMAIN) -> None:
        tmp = root / ("served-" + domain)
        tmp.mkdir()
        self.domain = domain
        self.dir = tmp / domain
        self.authority = key(domain + "-authority")
        create_domain(self.dir, domain, {p.public: 100 for p in people},
                      authority_key=self.authority[0])
        open_ledger(GatewayConfig(domain=domain, data_dir=self.dir)).store.close()
        keys = []
        for i, p in enumerate(people):
            write_key(tmp / ("p%d.key" % i), p.private)
            keys += ["--key", str(tmp / ("p%d.key" % i))]
        out = tmp / "mq"
        assert cli.main(["broker", "export", "--out", str(out), "--data-dir", str(self.dir),
                         *keys]) == 0
        assert "use_username_as_clientid" in broker_auth.MOSQUITTO_OPTIONS
        self.log = tmp / "mosquitto.log"  # (flushed line by line with log_type all)
        self.mq = factory(password_file=out / "passwd", acl_file=out / "acl",
                          log_dest="file %s" % self.log, log_type="all",
                          **broker_auth.MOSQUITTO_OPTIONS)
        self.url = self.mq.url
        self.proc = subprocess.Popen(
            [tool("thingledger"), "run", "--no-boards", "--no-http", "--data-dir", str(self.dir),
             "--domain", domain, "--broker", self.url, "--block-interval", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.seen: list[str] = []
        wait_line(lines(self.proc), r"chain %s at height" % domain, 60, self.seen)

    def connections_of(self, who: KeyPair) -> int:
        """Connections mosquitto accepted under `who`'s login (its log)."""
        return len(re.findall(r"New client connected from \S+ as %s " % who.id.hex(),
                              self.log_text()))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_a_host_supplier_keeps_its_one_connection_on_an_exported_mosquitto(
        tmp_path: Path, mosquitto_factory) -> None:
    """Its rx listener, its readings and its transactions (OFFER, WITHDRAW,
    each receipt on the rx topic it listens to) on one connection."""
    sam = keypair("onelogin-sam")
    d = Served(tmp_path, mosquitto_factory, [sam])
    sup = Supplier(sam, open_side(d.dir, d.url), timeout=20, line=lambda s: None)
    try:
        sup.register()  # known from the genesis: nothing sent
        sup.listen()
        sup.offer("temperature", 3, 1)  # committed (SupplyError otherwise)
        s = sup.stream(bytes(range(16)))
        for i in range(3):
            s.reading(i, 2150 + i, -2)  # acknowledged by mosquitto (SupplyError otherwise)
        assert s.pending == 3
        sup.withdraw("temperature")
        s.close()
        line = sup.connection
        assert (line.connects, line.url) == (1, d.url)
        log = d.log_text()
        assert "already connected" not in log, log
        assert d.connections_of(sam) == 1, log
    finally:
        sup.stop()
        d.stop()


def test_the_resellers_supplier_and_buyer_share_its_one_connection(
        tmp_path: Path, mosquitto_factory) -> None:
    """The reseller's shape (tools/resell.py): one key, a Supplier and a
    CrossBuyer on the same side, read over the broker (chain queries): its
    MATCH listener, its offer, the offer directory read by the buyer, a data
    stream it subscribes to and one it publishes, and chain queries, over
    one connection of its login."""
    rex = keypair("onelogin-rex")
    d = Served(tmp_path, mosquitto_factory, [rex])
    side = remote_side(DOMAIN, d.url, rex, 20)
    assert isinstance(side.store, RemoteStore)
    sup = Supplier(rex, side, timeout=20, line=lambda s: None)
    buyer = CrossBuyer(rex, side, side, timeout=20, seq=sup.seq, line=lambda s: None)
    try:
        sup.listen()
        sup.offer("temperature", 3, 1)
        listed = buyer.offers("temperature")  # the retained directory, read by the buyer
        assert [o[1] for o in listed] == [rex.id]
        agreement = bytes(range(16))
        inbox = buyer._subscribe(rex.id, agreement)  # a stream the buyer reads
        s = sup.stream(agreement)
        s.reading(0, 2150, -2)
        s.close()
        wait_until(lambda: inbox.held, 10, what="the reading on the buyer's subscription")
        assert len(inbox.held) == 1
        sup.withdraw("temperature")
        assert buyer.balance_in_market() == 100  # a chain query: its device record
        assert sup.connection is buyer.connection(side) is side.store.q.line
        assert sup.connection.connects == 1
        log = d.log_text()
        assert "already connected" not in log, log
        assert d.connections_of(rex) == 1, log
    finally:
        buyer.close()
        sup.stop()
        side.store.close()
        d.stop()


def test_the_relayer_keeps_one_connection_per_domain_on_exported_mosquittos(
        tmp_path: Path, mosquitto_factory) -> None:
    """The relayer's block watch, its bridge (A's retained offer directory
    republished in B) and its transactions, on one connection per domain
    under its login there (tools/relay.run holds them so)."""
    rel, sam = keypair("onelogin-relayer"), keypair("onelogin-sam")
    a = Served(tmp_path, mosquitto_factory, [rel, sam], "onelogin-a")
    b = Served(tmp_path, mosquitto_factory, [rel], "onelogin-b")
    sa, sb = open_side(a.dir, a.url), open_side(b.dir, b.url)
    sup = Supplier(sam, sa, timeout=20, line=lambda s: None)
    la, lb = sa.connection(rel, 20), sb.connection(rel, 20)
    watch = Watch([(sa, la), (sb, lb)])
    bridge = Bridge(sa, sb, rel, la, lb)
    try:
        sup.offer("temperature", 3, 1)  # A's directory, retained: the bridge republishes it
        got: list[bytes] = []
        bridged = topics.bridged(sb.domain, rel.id.hex(), sa.domain, "offers")
        stop = lb.subscribe(bridged, lambda _t, p: got.append(p))  # its own data subtree
        wait_until(lambda: got, 15, what="A's directory bridged into B")
        stop()
        assert bridge.forwarded >= 1
        assert ensure_registered(sb, rel, Seq(), 20) == ""  # known: a chain read
        watch.event.clear()
        ok, reason = submitter({sb.domain: sb}, 20, rel)(sb.domain, txm.make(
            rel.private, rel.id, txm.TYPE_TRANSFER, sb.domain, Seq()(), 0,
            {1: txm.device_id(b.authority[1]), 2: 1}))
        assert ok, reason
        assert watch.event.wait(15)  # a block of B announced, on the same connection
        assert (la.connects, lb.connects) == (1, 1)
        for d in (a, b):
            assert "already connected" not in d.log_text(), d.log_text()
            assert d.connections_of(rel) == 1, d.log_text()
    finally:
        watch.close()
        bridge.close()
        la.release()
        lb.release()
        sup.stop()
        a.stop()
        b.stop()


def test_the_rx_listener_moves_to_the_next_broker_when_its_broker_stops(
        mosquitto_factory) -> None:
    """A supplier given two brokers of its domain: when the first one stops,
    its rx subscription goes on on the second (a MATCH published there, held
    retained, reaches it); it reconnected to the dead one only before."""
    first, second = mosquitto_factory(), mosquitto_factory()
    kp = keypair("onelogin-mover")
    auth_id = txm.device_id(AUTHORITY[1])
    sup = Supplier(kp, Side(DOMAIN, None, "%s,%s" % (first.url, second.url), AUTHORITY[1], None),
                   timeout=10, line=lambda s: None)
    pub = AuthClient(second, "authority", None).connected()
    try:
        sup.listen()
        first.stop()
        agreement = bytes(range(16))
        msg = mg.match(agreement, b"\x01" * 32, kp.id, kp.public, "temp", 3, 4, 5, 1000, b"c",
                       "supplier", 7, 0, 60)
        pub.publish(topics.rx(DOMAIN, kp.id.hex()), notice.seal(AUTHORITY[0], auth_id, msg),
                    retain=True)
        got = sup.matches.get(timeout=20)
        assert (got.id, got.quantity) == (agreement, 4)
        assert sup.connection.url == second.url
        assert any(p.startswith(first.url + ": the connection dropped")
                   for p in sup.side.brokers.passed_over)
    finally:
        pub.close()
        sup.stop()


def test_one_login_one_connection_in_the_process(amqtt_broker) -> None:
    """Two sides of one domain and broker list (as two tools of one process
    build them) give one key's login the same connection; another key its
    own; the last release closes it, and the next use opens a new one."""
    rex, sam = keypair("onelogin-rex"), keypair("onelogin-sam")
    one = Side(DOMAIN, None, amqtt_broker.url, AUTHORITY[1], None)
    two = Side(DOMAIN, None, amqtt_broker.url, AUTHORITY[1], None)
    a, b, other = one.connection(rex), two.connection(rex), one.connection(sam)
    try:
        assert a is b and other is not a
        a.up()
        b.release()
        assert not a.closed  # still held
    finally:
        a.release()
        other.release()
    assert a.closed and other.closed
    again = two.connection(rex)
    try:
        assert again is not a and again.up()[0] == amqtt_broker.url
    finally:
        again.release()
