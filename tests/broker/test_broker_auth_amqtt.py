"""The embedded broker (amqtt) enforcing the chain's identities: CONNECT
credentials, the fake-id case, topic rights (docs/IDENTITY.md §3)."""

from __future__ import annotations

import socket

import pytest

from gateway import broker as broker_auth
from gateway.broker.embedded import ThreadedBroker
from tests.support.ba_world import DOMAIN, connack
from tests.support.brokers import HOST, free_port, wait_until

GW_CLIENT = f"thingledger-gateway-{DOMAIN}"


def test_good_credentials_connect(guarded, world):
    assert connack(HOST, guarded.port, world.a.hex, world.a.hex, world.a.password()) == 0
    assert connack(HOST, guarded.port, f"{world.b.hex}-tool", world.b.hex,
                   world.b.password()) == 0
    # the gateway logs in with the authority key, under its own client id
    user, pw = broker_auth.gateway_credentials(world.gw.priv, DOMAIN)
    assert user == world.gw.hex and pw == world.gw.password()
    assert connack(HOST, guarded.port, GW_CLIENT, user, pw) == 0


def test_wrong_password_refused(guarded, world):
    a = world.a
    for pw in (world.b.password(),  # someone else's credential
               a.password("otherdomain"),  # a's credential for another domain
               a.password().upper(),  # the same signature, another spelling
               a.password()[:-2] + "00",
               "", "not hex"):
        assert connack(HOST, guarded.port, a.hex, a.hex, pw) == broker_auth.BAD_USERNAME_PASSWORD
    assert connack(HOST, guarded.port, a.hex, a.hex, None) == broker_auth.BAD_USERNAME_PASSWORD
    assert connack(HOST, guarded.port, a.hex) == broker_auth.BAD_USERNAME_PASSWORD  # anonymous
    assert guarded.guard.refused["bad-password"] >= 5


def test_unknown_and_revoked_ids_refused(guarded, world):
    u, r = world.u, world.r
    assert connack(HOST, guarded.port, u.hex, u.hex, u.password()) == broker_auth.NOT_AUTHORIZED
    assert connack(HOST, guarded.port, r.hex, r.hex, r.password()) == broker_auth.NOT_AUTHORIZED
    assert guarded.guard.refused["unknown-principal"] == 1
    assert guarded.guard.refused["inactive-principal"] == 1
    # a gateway credential made with another key is not the gateway
    fake_gw = broker_auth.mqtt_password(world.u.priv, DOMAIN, world.gw.id)
    assert connack(HOST, guarded.port, GW_CLIENT, world.gw.hex, fake_gw) == 4


def test_client_id_and_will_must_be_the_principals_own(guarded, world):
    a, b = world.a, world.b
    port = guarded.port
    assert connack(HOST, port, b.hex, a.hex, a.password()) == broker_auth.IDENTIFIER_REJECTED
    assert connack(HOST, port, GW_CLIENT, a.hex, a.password()) == 2
    assert connack(HOST, port, "", a.hex, a.password()) == 2
    assert connack(HOST, port, a.hex, a.hex, a.password(),
                   will_topic=b.topic("status")) == broker_auth.NOT_AUTHORIZED
    assert connack(HOST, port, a.hex, a.hex, a.password(), will_topic=a.topic("status")) == 0


@pytest.mark.parametrize("clean", [True, False])
def test_second_connection_with_an_online_id_refused(guarded, world, clients, clean):
    """The fake-id case: a clone presenting the id (and even the credential) of a
    device that is online is refused, and the real device stays connected and
    keeps its session (amqtt alone would have taken it over before refusing)."""
    a = world.a
    real = clients(guarded, a, clean_session=clean).connected()
    assert real.subscribe(a.topic("rx")) == 1
    gw = clients(guarded, world.gw, client_id=GW_CLIENT).connected()

    assert connack(HOST, guarded.port, a.hex, a.hex, a.password(), clean=clean) == 5
    assert connack(HOST, guarded.port, a.hex, a.hex, a.password(), clean=not clean) == 5
    assert connack(HOST, guarded.port, f"{a.hex}-clone", a.hex, a.password()) == 5
    assert guarded.guard.refused["already-connected"] == 3

    gw.publish(a.topic("rx"), b"receipt-after-clone")
    real.wait_message(a.topic("rx"), b"receipt-after-clone")
    assert real.disconnected == 0

    # once the real device has gone, its id is free again
    real.close()
    wait_until(lambda: a.id not in guarded.guard.online(), 5, what="a released")
    assert connack(HOST, guarded.port, a.hex, a.hex, a.password()) == 0


def test_gateway_may_hold_several_connections(guarded, world, clients):
    clients(guarded, world.gw, client_id=GW_CLIENT, clean_session=False).connected()
    user, pw = broker_auth.gateway_credentials(world.gw.priv, DOMAIN)
    assert connack(HOST, guarded.port, "thingledger-cli", user, pw) == 0


def test_publishing_on_another_devices_topics_is_dropped(guarded, world, clients):
    a, b = world.a, world.b
    gw = clients(guarded, world.gw, client_id=GW_CLIENT).connected()
    assert gw.subscribe(f"tl/{DOMAIN}/#") == 1  # the observer: sees every allowed message
    rb = clients(guarded, b).connected()
    assert rb.subscribe(b.topic("#").rsplit("/", 1)[0] + "/#") == 1
    sa = clients(guarded, a).connected()

    # forbidden: b's status and rx, another domain, a topic outside tl/
    # and firmware releases (docs/OTA.md: only the domain authority publishes them)
    for topic in (b.topic("status"), b.topic("rx"), f"tl/other/dev/{a.hex}/status",
                  f"tl/{DOMAIN}/blocks", f"tl/{DOMAIN}/data/{b.hex}/t", "elsewhere",
                  f"tl/{DOMAIN}/fw/unix"):
        sa.publish(topic, b"forged")  # QoS 1: PUBACKed, then dropped
    # allowed, as a barrier: a's own status and tx, then the gateway writes to b
    sa.publish(a.topic("status"), b"online", retain=True)
    sa.publish(f"tl/{DOMAIN}/tx", b"tx-from-a")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"tx-from-a")
    gw.publish(b.topic("rx"), b"receipt-for-b")
    rb.wait_message(b.topic("rx"), b"receipt-for-b")

    assert not rb.got(payload=b"forged")
    assert not gw.got(payload=b"forged")
    assert gw.got(a.topic("status"), b"online")
    assert guarded.guard.dropped["publish"] == 7


def test_subscribing_to_what_is_not_granted_is_refused(guarded, world, clients):
    a, b, r = world.a, world.b, world.r
    sa = clients(guarded, a).connected()
    refused = (b.topic("rx"), b.topic("#").rsplit("/", 1)[0] + "/#", f"tl/{DOMAIN}/dev/+/rx",
               f"tl/{DOMAIN}/#", "#", f"tl/{DOMAIN}/tx", f"tl/{DOMAIN}/data/{r.hex}/#",
               f"tl/{DOMAIN}/data/+/#", f"tl/other/dev/{a.hex}/rx")
    for topic in refused:
        assert sa.subscribe(topic) == 0x80, topic
    granted = (a.topic("rx"), f"tl/{DOMAIN}/dev/{a.hex}/#", f"tl/{DOMAIN}/blocks",
               f"tl/{DOMAIN}/offers", f"tl/{DOMAIN}/data/{b.hex}/#",
               f"tl/{DOMAIN}/data/{b.hex}/temp", f"tl/{DOMAIN}/data/{a.hex}/#",
               f"tl/{DOMAIN}/fw/unix", f"tl/{DOMAIN}/fw/unix/00ff/1/2")  # releases: docs/OTA.md
    for topic in granted:
        assert sa.subscribe(topic) == 1, topic


def test_data_streams_follow_read_grants(guarded, world, clients):
    a, b = world.a, world.b
    sa = clients(guarded, a).connected()
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 1
    sb = clients(guarded, b).connected()
    topic = f"tl/{DOMAIN}/data/{b.hex}/temp"
    sb.publish(topic, b"2150")
    sa.wait_message(topic, b"2150")
    # the grant is revoked on chain: deliveries stop at once, and a cannot
    # subscribe again (b itself still reads its own stream)
    world.access.reads[a.id].clear()
    assert sb.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 1
    sb.publish(topic, b"2160")
    sb.wait_message(topic, b"2160")
    assert not sa.got(topic, b"2160")
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 0x80


def test_revoked_while_connected_loses_its_rights(guarded, world, clients):
    a = world.a
    gw = clients(guarded, world.gw, client_id=GW_CLIENT).connected()
    assert gw.subscribe(f"tl/{DOMAIN}/tx") == 1
    sa = clients(guarded, a).connected()
    sa.publish(f"tl/{DOMAIN}/tx", b"before")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"before")
    world.access.inactive.add(a.id)
    sa.publish(f"tl/{DOMAIN}/tx", b"after")
    sb = clients(guarded, world.b).connected()
    sb.publish(f"tl/{DOMAIN}/tx", b"barrier")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"barrier")
    assert not gw.got(payload=b"after")
    sa.close()
    wait_until(lambda: a.id not in guarded.guard.online(), 5, what="a released")
    assert connack(HOST, guarded.port, a.hex, a.hex, a.password()) == 5


def test_identities_unavailable_refuses_without_crashing(world):
    def no_chain():
        raise RuntimeError("ledger not open yet")

    tb = ThreadedBroker(HOST, free_port(), access=no_chain, domain=DOMAIN,
                        authority=world.gw.pub)
    tb.start()
    try:
        a = world.a
        assert connack(HOST, tb.broker.port, a.hex, a.hex, a.password()) == 3
        user, pw = broker_auth.gateway_credentials(world.gw.priv, DOMAIN)
        assert connack(HOST, tb.broker.port, GW_CLIENT, user, pw) == 0  # needs no chain
    finally:
        tb.stop(5)


def test_anonymous_mode_unchanged(world):
    tb = ThreadedBroker(HOST, free_port())
    tb.start()
    try:
        assert not tb.broker.enforcing
        assert connack(HOST, tb.broker.port, "anyone") == 0
        a = world.a
        assert connack(HOST, tb.broker.port, a.hex, a.hex, a.password()) == 0
    finally:
        tb.stop(5)


def test_enforcing_broker_needs_a_domain(world):
    with pytest.raises(ValueError):
        ThreadedBroker(HOST, free_port(), access=lambda: world.access)


def test_an_abruptly_lost_connection_frees_the_id(guarded, world):
    """A board losing power (TCP closed, no DISCONNECT) may log in again."""
    a = world.a
    s = socket.create_connection((HOST, guarded.port), timeout=5)
    try:
        user, pw = a.hex.encode(), a.password().encode()
        payload = b"".join(len(x).to_bytes(2, "big") + x for x in (user, user, pw))
        body = b"\x00\x04MQTT\x04\xc2\x00\x1e" + payload
        s.sendall(b"\x10" + bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body)
        assert s.recv(4) == b"\x20\x02\x00\x00"
        wait_until(lambda: a.id in guarded.guard.online(), 5, what="a online")
        assert connack(HOST, guarded.port, a.hex, a.hex, a.password()) == 5
    finally:
        s.close()
    wait_until(lambda: a.id not in guarded.guard.online(), 5, what="a released")
    assert connack(HOST, guarded.port, a.hex, a.hex, a.password()) == 0
