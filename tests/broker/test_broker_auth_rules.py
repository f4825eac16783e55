"""The pure parts of broker enforcement: credentials, topic filter coverage,
the credential store, mosquitto hashes."""

from __future__ import annotations

import json

import pytest

from gateway import broker as broker_auth
from gateway.broker.policy import filter_within
from tests.support.ba_world import DOMAIN, FakeAccess, Principal


def test_credential_is_deterministic_and_verifies():
    a = Principal("device-a")
    pw = a.password()
    assert pw == a.password() and len(pw) == 128 and pw == pw.lower()
    assert broker_auth.verify_password(a.pub, DOMAIN, a.id, pw)
    assert not broker_auth.verify_password(a.pub, "other", a.id, pw)
    assert not broker_auth.verify_password(a.pub, DOMAIN, Principal("b").id, pw)
    assert not broker_auth.verify_password(Principal("b").pub, DOMAIN, a.id, pw)
    assert not broker_auth.verify_password(a.pub, DOMAIN, a.id, pw.upper())
    assert not broker_auth.verify_password(a.pub, DOMAIN, a.id, pw.encode() + b"00")
    assert not broker_auth.verify_password(b"", DOMAIN, a.id, pw)
    # the signed bytes: canonical CBOR ["mqtt", domain, id]
    assert broker_auth.credential_message(DOMAIN, a.id) == (
        b"\x83\x64mqtt\x64demo\x50" + a.id)


N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order


def _high_s_twin(pw: str) -> str:
    sig = bytes.fromhex(pw)
    return (sig[:32] + (N - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")).hex()


def test_high_s_twin_of_a_password_is_refused(tmp_path):
    """One password per principal (as mosquitto, which compares hashes): the
    high-s twin, valid plain ECDSA, is refused; a credential store holding a
    twin (written by firmware from before the low-s rule) loads low-s."""
    a = Principal("device-a")
    pw = a.password()
    twin = _high_s_twin(pw)
    assert twin != pw
    assert not broker_auth.verify_password(a.pub, DOMAIN, a.id, twin)
    path = tmp_path / "credentials.json"
    broker_auth.add_credential(path, a.id, twin)
    assert broker_auth.load_credentials(path) == {a.id: pw}


@pytest.mark.parametrize("requested,allowed,ok", [
    ("tl/d/tx", "tl/d/tx", True),
    ("tl/d/tx", "tl/d/#", True),
    ("tl/d", "tl/d/#", True),  # '#' matches the parent level too
    ("tl/d/dev/x/rx", "tl/d/dev/x/#", True),
    ("tl/d/dev/x/#", "tl/d/dev/x/#", True),
    ("tl/d/dev/x/+", "tl/d/dev/x/#", True),
    ("tl/d/dev/+/rx", "tl/d/dev/x/#", False),
    ("tl/d/dev/#", "tl/d/dev/x/#", False),
    ("tl/d/#", "tl/d/tx", False),
    ("tl/d/+", "tl/d/tx", False),
    ("tl/d/tx/more", "tl/d/tx", False),
    ("tl/d", "tl/d/tx", False),
    ("tl/d/x", "tl/d/+", True),
    ("tl/d/+", "tl/d/+", True),
    ("tl/d/#", "tl/d/+", False),
    ("tl/d/x/y", "tl/d/+", False),
    ("#", "tl/#", False),
    ("tl/other/tx", "tl/d/#", False),
])
def test_filter_within(requested, allowed, ok):
    assert filter_within(requested, allowed) is ok


def test_guard_rules_without_a_broker():
    gw, a, b = Principal("gw"), Principal("a"), Principal("b")
    acc = FakeAccess.of(gw, a, b)
    acc.grant_read(a, b)
    g = broker_auth.Guard(DOMAIN, lambda: acc, gw.pub)
    v = g.admit(a.hex, a.password(), a.hex, a.topic("status"))
    assert v.ok and g.online() == {a.id}
    assert g.admit(a.hex, a.password(), a.hex).reason == "already-connected"
    g.release(v)
    assert g.online() == set()
    assert g.admit(gw.hex, gw.password(), "anything").gateway
    assert g.online() == set()  # the gateway holds no exclusive claim
    assert g.may(gw.hex, f"tl/{DOMAIN}/dev/{a.hex}/rx", "publish")
    assert not g.may(gw.hex, "tl/other/tx", "publish")
    assert g.may(a.hex, f"tl/{DOMAIN}/data/{b.hex}/t", "receive")
    assert not g.may(b.hex, f"tl/{DOMAIN}/data/{a.hex}/t", "receive")
    assert not g.may("nobody", f"tl/{DOMAIN}/tx", "publish")
    assert g.dropped["receive"] == 1 and g.dropped["publish"] == 2


def test_credential_store(tmp_path):
    a, b = Principal("a"), Principal("b")
    path = tmp_path / "credentials.json"
    assert broker_auth.load_credentials(path) == {}
    broker_auth.add_credential(path, a.id, a.password())
    broker_auth.add_credential(path, b.id, b.password())
    broker_auth.add_credential(path, a.id, a.password("other"))
    assert json.loads(path.read_text()) == {a.hex: a.password("other"), b.hex: b.password()}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert broker_auth.load_credentials(path) == {a.id: a.password("other"), b.id: b.password()}
    with pytest.raises(ValueError):
        broker_auth.add_credential(path, a.id, "short")
    path.write_text("[]")
    with pytest.raises(ValueError):
        broker_auth.load_credentials(path)


def test_mosquitto_hash_vector():
    # mosquitto_passwd -b f alice secret wrote this line (mosquitto 2.0.11)
    line = ("$7$101$3AKeY2MuAE57nIcN$6w85JnBI7P/Z1+8dw28i3bUnUjJMriYGjBEAhp4yETcsYhvzx"
            "mej8aKHeFhuxObhT0KOLN6zP/0z4j47JmNE8g==")
    assert broker_auth.mosquitto_check("secret", line)
    salt = bytes.fromhex("dc029e63632e004e7b9c870d")
    assert broker_auth.mosquitto_hash("secret", salt) == line
    assert not broker_auth.mosquitto_check("secret", "$6$abc$def")


def test_a_buyer_reads_the_stream_it_bought_and_nothing_else():
    gw, sup, buyer, other = (Principal(n) for n in ("gw", "sup", "buyer", "other"))
    acc = FakeAccess.of(gw, sup, buyer, other)
    aid, aid2 = bytes(range(16)), bytes(range(1, 17))
    acc.purchases[buyer.id] = {(sup.id, aid)}
    g = broker_auth.Guard(DOMAIN, lambda: acc, gw.pub)
    topic = f"tl/{DOMAIN}/data/{sup.hex}/{aid.hex()}"
    assert g.may(sup.hex, topic, "publish")  # under its own id
    assert not g.may(buyer.hex, topic, "publish")
    assert g.may(buyer.hex, topic, "subscribe") and g.may(buyer.hex, topic, "receive")
    assert not g.may(buyer.hex, f"tl/{DOMAIN}/data/{sup.hex}/{aid2.hex()}", "subscribe")
    assert not g.may(buyer.hex, f"tl/{DOMAIN}/data/{sup.hex}/#", "subscribe")
    assert not g.may(other.hex, topic, "subscribe")
    acc.purchases.clear()  # the agreement closed: the stream is no longer theirs
    assert not g.may(buyer.hex, topic, "receive")
    text = broker_auth.mosquitto_acl(DOMAIN, gw.hex, {buyer.hex: ([], [], False)},
                                     {buyer.hex: [topic]})
    assert f"topic read {topic}" in text.split(f"user {buyer.hex}")[1]


def test_chain_queries_only_under_the_requesters_own_subtree():
    """Any registered principal may ask the gateways chain queries
    (shared/chainquery.py), publishing only its own request topic and reading
    only its own answers; the gateway reads every request and answers all."""
    gw, a, b = Principal("gw"), Principal("a"), Principal("b")
    acc = FakeAccess.of(gw, a, b)
    g = broker_auth.Guard(DOMAIN, lambda: acc, gw.pub)
    q = f"tl/{DOMAIN}/q"
    assert g.may(a.hex, f"{q}/{a.hex}/req", "publish")
    assert g.may(a.hex, f"{q}/{a.hex}/res", "subscribe")
    assert g.may(a.hex, f"{q}/{a.hex}/res", "receive")
    assert not g.may(a.hex, f"{q}/{b.hex}/req", "publish")  # not in another's name
    assert not g.may(a.hex, f"{q}/{b.hex}/res", "subscribe")  # nor read another's answers
    assert not g.may(a.hex, f"{q}/+/res", "subscribe")
    assert not g.may(a.hex, f"{q}/{a.hex}/res", "publish")  # no forged answers to itself
    assert not g.may(a.hex, f"{q}/+/req", "subscribe")  # nor read others' requests
    assert g.may(gw.hex, f"{q}/+/req", "subscribe") and g.may(gw.hex, f"{q}/{a.hex}/res",
                                                                "publish")
    assert not g.may("nobody", f"{q}/nobody/req", "publish")  # not a principal
