"""Broker enforcement over the real gateway.identity.access.Access, built from a
gateway.ledger.state.State with the identity records the chain produces (an owner,
claimed devices, a read grant, a revoked device)."""

from __future__ import annotations

import pytest

from gateway import broker as broker_auth
from gateway.broker.embedded import ThreadedBroker
from tests.support.ba_world import DOMAIN, Principal, connack
from tests.support.brokers import HOST, free_port
from tools.cli import broker as cli_broker

state_mod = pytest.importorskip("gateway.ledger.state")
pytest.importorskip("gateway.identity.access")


class Chain:
    def __init__(self) -> None:
        st = state_mod
        self.gw, self.owner = Principal("authority"), Principal("owner")
        self.a, self.b, self.r = Principal("dev-a"), Principal("dev-b"), Principal("dev-r")
        self.u = Principal("dev-unknown")
        rec_b = st.claimed_device(self.b.pub, self.owner.id)
        rec_b = st.DeviceRecord(rec_b.pubkey, 0, 0, rec_b.kind, rec_b.status, rec_b.owner,
                                st.acl_set(rec_b.acl, self.a.id, ("read",)))
        rec_r = st.claimed_device(self.r.pub, self.owner.id)
        rec_r = st.DeviceRecord(rec_r.pubkey, 0, 0, rec_r.kind, st.REVOKED, rec_r.owner,
                                rec_r.acl)
        self.records = {
            self.gw.id: st.DeviceRecord(self.gw.pub, 0, 0, st.KIND_AUTHORITY),
            self.owner.id: st.person(self.owner.pub, claimant=True),
            self.a.id: st.claimed_device(self.a.pub, self.owner.id),
            self.b.id: rec_b,
            self.r.id: rec_r,
        }
        self.state = st.State(self.records)
        self.version = 0

    def provider(self):
        return broker_auth.chain_access(DOMAIN, lambda: self.state, lambda: self.version)


@pytest.fixture
def chain():
    return Chain()


@pytest.fixture
def broker(chain):
    tb = ThreadedBroker(HOST, free_port(), access=chain.provider(), domain=DOMAIN,
                        authority=chain.gw.pub)
    tb.start()
    tb.host, tb.port = tb.broker.host, tb.broker.port
    yield tb
    tb.stop(5)


def test_logins_follow_the_chain(broker, chain):
    p = broker.port
    for who in (chain.a, chain.b, chain.owner):
        assert connack(HOST, p, who.hex, who.hex, who.password()) == 0, who.name
    assert connack(HOST, p, chain.r.hex, chain.r.hex, chain.r.password()) == 5  # revoked
    assert connack(HOST, p, chain.u.hex, chain.u.hex, chain.u.password()) == 5  # unknown
    assert connack(HOST, p, chain.a.hex, chain.a.hex, chain.b.password()) == 4
    user, pw = broker_auth.gateway_credentials(chain.gw.priv, DOMAIN)
    assert connack(HOST, p, "thingledger-gateway-demo", user, pw) == 0


def test_topics_follow_rights_and_a_new_block(broker, chain, clients):
    a, b, owner = chain.a, chain.b, chain.owner
    sa = clients(broker, a).connected()
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 1  # granted read
    assert sa.subscribe(b.topic("rx")) == 0x80
    so = clients(broker, owner).connected()
    for d in (a, b):  # the owner reads every device it owns
        assert so.subscribe(f"tl/{DOMAIN}/data/{d.hex}/#") == 1
    sb = clients(broker, b).connected()
    assert sb.subscribe(f"tl/{DOMAIN}/data/{a.hex}/#") == 0x80  # no grant that way

    # a block revokes a: the provider rebuilds Access when the head moves
    st = state_mod
    rec = chain.records[a.id]
    chain.state = st.State({**chain.records, a.id: st.DeviceRecord(
        rec.pubkey, 0, 0, rec.kind, st.REVOKED, rec.owner, rec.acl)})
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 1  # same version: old snapshot
    chain.version += 1
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 0x80


def test_export_with_the_real_access(chain, tmp_path):
    access = cli_broker.access_from_state(chain.state, DOMAIN)
    creds = {p.id: p.password() for p in (chain.a, chain.b, chain.r, chain.owner)}
    ex = broker_auth.export_mosquitto(tmp_path, DOMAIN, access, creds,
                                      broker_auth.gateway_credentials(chain.gw.priv, DOMAIN))
    assert ex.users[0] == chain.gw.hex
    assert sorted(ex.users[1:]) == sorted([chain.a.hex, chain.b.hex, chain.owner.hex])
    acl = (tmp_path / "acl").read_text()
    owner_block = acl.split(f"user {chain.owner.hex}\n")[1].split("\n\n")[0]
    for d in (chain.a, chain.b):
        assert f"topic read tl/{DOMAIN}/data/{d.hex}/#" in owner_block
    assert f"user {chain.r.hex}" not in acl  # revoked: no login (its owner may still read)


def test_sessions_and_status_by_role(chain):
    """Devices hold one connection (the fake-id case); people and coordination
    nodes may hold several, each with its own client id; only coordination
    nodes (and the gateway) read every node's status."""
    from dataclasses import replace

    from gateway.identity import roles

    st = state_mod
    coord = Principal("coordinator")
    chain.records[coord.id] = replace(st.person(coord.pub), kind=st.KIND_NODE,
                                      node=roles.COORDINATION)
    chain.state = st.State(chain.records)
    chain.version += 1
    guard = broker_auth.Guard(DOMAIN, chain.provider(), chain.gw.pub)

    def admit(p: Principal, suffix: str):
        return guard.admit(p.hex, p.password(), f"{p.hex}-{suffix}")

    assert admit(chain.a, "1").ok and not admit(chain.a, "2").ok  # a device: one at a time
    assert admit(chain.owner, "cli").ok and admit(chain.owner, "dash").ok
    assert admit(coord, "status").ok and admit(coord, "submit").ok
    status = f"tl/{DOMAIN}/dev/{chain.b.hex}/status"
    assert guard.may(coord.hex, f"tl/{DOMAIN}/dev/+/status", "subscribe")
    assert guard.may(coord.hex, status, "receive")
    assert not guard.may(coord.hex, status, "publish")
    assert not guard.may(chain.owner.hex, f"tl/{DOMAIN}/dev/+/status", "subscribe")
    assert not guard.may(chain.a.hex, status, "receive")
