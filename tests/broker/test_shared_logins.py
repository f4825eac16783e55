"""gateway/broker/shared_logins.py: the logins a machine exports from its own
credential store and the cluster's login bucket, each verified against the
principal's current key; what it publishes; and the NATS export's allow lists,
which give no MQTT user a subject of the bucket (gateway/cluster/login_bucket.py)."""

from __future__ import annotations

import re

from gateway.broker import mqtt_password
from gateway.broker.nats_export import export_nats
from gateway.broker.shared_logins import (
    MALFORMED,
    NOT_A_PRINCIPAL,
    WRONG_KEY,
    choose_logins,
)
from gateway.cluster import link
from tests.support.ba_world import DOMAIN, FakeAccess, Principal

A, B, C, GW = Principal("a"), Principal("b"), Principal("c"), Principal("gw")


def access() -> FakeAccess:
    return FakeAccess.of(A, B, C, GW)


def test_union_of_local_and_verified_bucket_logins():
    acc, remembered = access(), {}
    stranger = Principal("stranger")
    bucket = {
        B.hex: B.password(),  # claimed on another machine: verifies here
        C.hex: A.password(),  # another principal's signature
        stranger.hex: stranger.password(),  # not a principal of this chain
        "zz": "00" * 64,  # not an id
        A.hex + "x": "ab",  # not an id either
        GW.hex: GW.password(),  # the gateway's user comes from the domain key, never here
    }
    c = choose_logins(DOMAIN, acc, {A.id: A.password()}, bucket, remembered, GW.hex)
    assert c.logins == {A.id: A.password(), B.id: B.password()}
    assert c.left_out == {(C.hex, A.password()): WRONG_KEY,
                          (stranger.hex, stranger.password()): NOT_A_PRINCIPAL,
                          ("zz", "00" * 64): MALFORMED, (A.hex + "x", "ab"): MALFORMED}
    assert c.publish == {A.id: A.password()}  # the bucket lacks it
    assert remembered == c.logins

    # once the bucket has it, nothing to publish; bytes as stored are read the same
    bucket[A.hex] = A.password().encode()
    c = choose_logins(DOMAIN, acc, {A.id: A.password()}, bucket, remembered, GW.hex)
    assert c.publish == {} and c.logins[A.id] == A.password()


def test_a_wrong_bucket_entry_is_overwritten_by_the_machine_that_holds_the_login():
    acc, remembered = access(), {}
    forged = mqtt_password(B.priv, DOMAIN, A.id)  # A's message signed by B's key
    c = choose_logins(DOMAIN, acc, {A.id: A.password()}, {A.hex: forged}, remembered)
    assert c.logins == {A.id: A.password()}
    assert c.left_out == {(A.hex, forged): WRONG_KEY}
    assert c.publish == {A.id: A.password()}


def test_garbage_over_a_good_entry_does_not_log_the_device_out():
    acc, remembered = access(), {}
    c = choose_logins(DOMAIN, acc, {}, {A.hex: A.password()}, remembered)
    assert c.logins == {A.id: A.password()}
    garbage = "ab" * 64
    c = choose_logins(DOMAIN, acc, {}, {A.hex: garbage}, remembered)
    assert c.logins == {A.id: A.password()}  # the login that verified here before
    assert c.left_out == {(A.hex, garbage): WRONG_KEY} and c.publish == {}
    c = choose_logins(DOMAIN, acc, {}, {}, remembered)  # the entry deleted: the same
    assert c.logins == {A.id: A.password()}


def test_a_rotated_key_drops_the_old_login_wherever_it_comes_from():
    acc, remembered = access(), {}
    old = A.password()
    choose_logins(DOMAIN, acc, {A.id: old}, {A.hex: old}, remembered)
    new_key = Principal("a-next")
    acc.keys[A.id] = new_key.pub  # KEY_ROTATE on chain
    c = choose_logins(DOMAIN, acc, {A.id: old}, {A.hex: old}, remembered)
    # the stale local login goes to the export, which leaves it out and says why
    assert c.logins == {A.id: old} and c.publish == {}
    assert c.left_out == {(A.hex, old): WRONG_KEY}
    assert A.id not in remembered
    # the new login, stored on another machine, published there: this one takes it
    new = mqtt_password(new_key.priv, DOMAIN, A.id)
    c = choose_logins(DOMAIN, acc, {A.id: old}, {A.hex: new}, remembered)
    assert c.logins == {A.id: new} and c.publish == {} and c.left_out == {}
    # the machine that stored the new one publishes it over the stale entry
    c = choose_logins(DOMAIN, acc, {A.id: new}, {A.hex: old}, {})
    assert c.publish == {A.id: new}


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more at the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def test_no_mqtt_user_has_a_subject_of_the_bucket(tmp_path):
    assert _matches("tl.d.>", "tl.d.a.b") and not _matches("tl.d.>", "tl.d")
    assert _matches("$KV.*.>", "$KV.X.k") and not _matches("tl.*", "tl.a.b")
    acc = access()
    acc.grant_read(A, B)
    acc.owners[B.id] = C.id
    acc.purchases[A.id] = {(B.id, b"\x01" * 16)}
    creds = {p.id: p.password() for p in (A, B, C)}
    path = tmp_path / "auth.conf"
    ex = export_nats(path, DOMAIN, acc, creds, (GW.hex, GW.password()), cost=4)
    assert len(ex.users) == 4
    bucket = link.logins_bucket(DOMAIN)
    stream = "KV_" + bucket
    subjects = [f"$KV.{bucket}.{A.hex}", f"$KV.{bucket}.{B.hex}",
                f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.x",
                f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.c.$KV.{bucket}.>",
                f"$JS.API.STREAM.CREATE.{stream}", "$JS.API.INFO"]
    allows = 0
    for line in path.read_text().splitlines():
        if "permissions" not in line:
            continue
        for pattern in re.findall(r'"([^"]+)"', line.split("permissions", 1)[1]):
            allows += 1
            for subject in subjects:
                assert not _matches(pattern, subject), (pattern, subject)
    assert allows > 20  # every MQTT user's allow lists were read


def test_each_login_is_verified_once_per_key(monkeypatch):
    from gateway.broker import shared_logins

    calls: list[bytes] = []
    real = shared_logins.verify_password

    def counting(pk, domain, pid, pw):
        calls.append(pid)
        return real(pk, domain, pid, pw)

    monkeypatch.setattr(shared_logins, "verify_password", counting)
    acc, remembered, verdicts = access(), {}, {}
    bucket = {B.hex: B.password(), C.hex: A.password()}
    first = choose_logins(DOMAIN, acc, {A.id: A.password()}, bucket, remembered, None, verdicts)
    n = len(calls)
    assert n >= 3
    again = choose_logins(DOMAIN, acc, {A.id: A.password()}, bucket, remembered, None, verdicts)
    assert len(calls) == n and again == first  # the next block's export: no new check
    acc.keys[A.id] = Principal("a-next").pub  # a rotation: checked again under the new key
    c = choose_logins(DOMAIN, acc, {A.id: A.password()}, bucket, remembered, None, verdicts)
    assert calls[n:] == [A.id] and A.id not in remembered and B.id in c.logins


def test_cluster_option_needs_nats_and_nats_urls(chain, tmp_path):
    from tools import cli

    base = ["broker", "export", "--data-dir", str(chain)]
    assert cli.main(base + ["--out", str(tmp_path / "m"), "--cluster",
                            "nats://127.0.0.1:4222"]) == cli.EXIT_USAGE
    assert cli.main(base + ["--nats", str(tmp_path / "a.conf"), "--cluster",
                            "mqtt://127.0.0.1:1883"]) == cli.EXIT_USAGE
    assert not (tmp_path / "a.conf").exists() and not (tmp_path / "m").exists()
