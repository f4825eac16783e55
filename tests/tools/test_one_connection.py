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
from tools.relay import Side, open_side, remote_side
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

    def __init__(self, tmp: Path, factory, people: list[KeyPair]) -> None:
        self.dir = tmp / DOMAIN
        create_domain(self.dir, DOMAIN, {p.public: 100 for p in people},
                      authority_key=AUTHORITY[0])
        open_ledger(GatewayConfig(domain=DOMAIN, data_dir=self.dir)).store.close()
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
             "--domain", DOMAIN, "--broker", self.url, "--block-interval", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.seen: list[str] = []
        wait_line(lines(self.proc), r"chain %s at height" % DOMAIN, 60, self.seen)

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
