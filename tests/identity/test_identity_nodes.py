"""Node roles (docs/IDENTITY.md §4): the pure labelling function, NODE_JOIN
and NODE_ASSIGN rules, `thingledger nodes`."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.identity import roles
from gateway.identity import statements as itx
from gateway.ledger.state import KIND_NODE
from shared import errors
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device
from tests.support.idtest import COORD_HW, FULL_HW, LIGHT_HW, World, signer
from tools.keys import KeyPair

MIB = 1024


@pytest.mark.parametrize("hw,lifetime,want", [
    ({"power": "mains", "ram_kib": 512 * MIB}, "long", "full"),  # the threshold itself
    ({"power": "mains", "ram_kib": 8 * 1024 * MIB}, "long", "full"),
    ({"power": "mains", "ram_kib": 512 * MIB - 1}, "long", "coordination"),
    ({"power": "usb", "ram_kib": 4096 * MIB}, "long", "coordination"),
    ({"power": "battery", "ram_kib": 4096 * MIB}, "long", "coordination"),
    ({"power": "mains", "ram_kib": 520}, "long", "coordination"),  # ESP32 on a plug
    ({"power": "mains", "ram_kib": 4096 * MIB}, "short", "light"),
    ({"power": "battery", "ram_kib": 264}, "short", "light"),
    ({}, "long", "coordination"),
    ({}, "short", "light"),
    ({"power": "mains", "ram_kib": "lots"}, "long", "coordination"),
    ({"power": "mains", "ram_kib": True}, "long", "coordination"),
    ({"power": "mains", "ram_kib": 512 * MIB}, "forever", "light"),
])
def test_label(hw: dict[str, Any], lifetime: str, want: str) -> None:
    assert roles.label(hw, lifetime) == want
    assert roles.label_of({**hw, "lifetime": lifetime}) == want


def test_shipped_hardware_maps() -> None:
    for hw, want in ((FULL_HW, "full"), (COORD_HW, "coordination"), (LIGHT_HW, "light")):
        assert roles.check_hardware(hw) == ""
        assert roles.label_of(hw) == want


@pytest.mark.parametrize("hw", [
    [], {"power": "mains", "ram_kib": 1}, {"power": "solar", "ram_kib": 1, "lifetime": "long"},
    {"power": "mains", "ram_kib": -1, "lifetime": "long"},
    {"power": "mains", "ram_kib": 1, "lifetime": "always"},
    {"power": "mains", "ram_kib": 1, "lifetime": "long", "gpu": 1},
    {"power": "mains", "ram_kib": 1, "lifetime": "long", "cpu_mhz": "fast"},
    {"power": "mains", "ram_kib": 1, "lifetime": "long", "board": ""},
    {"power": "mains", "ram_kib": 1, "lifetime": "long", 1: 2},
])
def test_bad_hardware(world: World, hw: Any) -> None:
    assert roles.check_hardware(hw) == "bad-hardware"
    msg = txm.make(world.owner.private, world.owner.id, txm.TYPE_NODE_JOIN, DOMAIN,
                   world.owner.next(), 0, {1: "light", 2: hw})
    assert world.refused(msg) == (errors.BAD_TX, "bad-hardware")


def test_join_schema_refusals(world: World) -> None:
    o = world.owner
    cert = itx.node_certificate(o, DOMAIN, o.id)
    # declared label must be the computed one
    assert world.refused(world.join(o, LIGHT_HW, label="full", cert=cert)) == (
        errors.BAD_TX, "label-mismatch")
    assert world.refused(world.join(o, FULL_HW, label="coordination")) == (
        errors.BAD_TX, "label-mismatch")
    assert world.refused(world.join(o, FULL_HW, label="boss")) == (errors.BAD_TX, "bad-label")
    # full needs a certificate; others carry none
    assert world.refused(world.join(o, FULL_HW)) == (errors.BAD_TX, "certificate-required")
    assert world.refused(world.join(o, COORD_HW, cert=cert)) == (errors.BAD_TX, "bad-body")
    assert world.refused(world.join(o, LIGHT_HW, introduce=True)) == (errors.BAD_TX, "bad-body")
    assert world.refused(world.join(o, FULL_HW, cert=b"junk")) == (errors.BAD_TX,
                                                                   "bad-statement")


def test_light_and_coordination_join(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s))
    # bob is not known to the domain: he cannot join
    assert world.refused(world.join(world.bob, COORD_HW))[0] == errors.UNKNOWN_DEVICE
    world.commit(world.grant(s, world.bob, "read"))  # now a known person
    events = world.commit(world.join(s, LIGHT_HW), world.join(world.bob, COORD_HW))
    assert events == [[["node", s.id, "light"]], [["node", world.bob.id, "coordination"]]]
    r = world.rec(s)
    assert (r.node, r.assigned, r.owner) == ("light", b"", world.owner.id)
    assert world.rec(world.bob).node == "coordination"


def test_light_node_has_no_valid_id_before_its_join(world: World) -> None:
    s, c, full = world.sensor, world.plug, world.cam
    world.commit(world.claim(s), world.claim(c), world.claim(full))
    world.commit(world.join(c, COORD_HW),
                 world.join(full, FULL_HW, cert=itx.node_certificate(world.owner, DOMAIN,
                                                                     full.id)))
    # unknown to the node table: not joined
    assert world.refused(world.assign(c, s, full)) == (errors.UNKNOWN_DEVICE, "light-node")
    # join pending: still not valid
    assert world.node.submit(world.join(s, LIGHT_HW))
    with pytest.raises(errors.TLError) as ei:
        world.node.submit(world.assign(c, s, full))
    assert (ei.value.reason, ei.value.detail) == (errors.UNKNOWN_DEVICE, "light-node")
    world.node.produce()
    events = world.commit(world.assign(c, s, full))
    assert events == [[["assign", s.id, full.id]]]
    assert world.rec(s).assigned == full.id


def test_full_node_certificate(world: World) -> None:
    f = world.cam
    world.commit(world.claim(f))
    # certificate by someone else / for another node / for another domain
    for cert in (itx.node_certificate(world.bob, DOMAIN, f.id),):
        assert world.refused(world.join(f, FULL_HW, cert=cert)) == (errors.BAD_SIGNATURE,
                                                                    "certificate")
    for cert in (itx.node_certificate(world.owner, DOMAIN, world.plug.id),
                 itx.node_certificate(world.owner, "other", f.id)):
        assert world.refused(world.join(f, FULL_HW, cert=cert)) == (
            errors.BAD_TX, "certificate-mismatch")
    world.commit(world.join(f, FULL_HW, cert=itx.node_certificate(world.owner, DOMAIN, f.id)))
    assert world.rec(f).node == "full"


def test_full_node_introducing_itself(world: World) -> None:
    gw2 = Device("gateway-2")  # a second Raspberry Pi, not claimed
    cert = itx.node_certificate(world.owner, DOMAIN, gw2.id)
    # without its key it is unknown
    assert world.refused(world.join(gw2, FULL_HW, cert=cert))[0] == errors.UNKNOWN_DEVICE
    gw2.seq = 0
    # key of another sender
    m = itx.build_node_join(signer(gw2), DOMAIN, "full", FULL_HW, 1, cert, True,
                            sender=world.plug.id)
    assert world.refused(m) == (errors.BAD_TX, "sender-mismatch")
    # without a valid certificate
    bad = itx.node_certificate(world.bob, DOMAIN, gw2.id)
    assert world.refused(world.join(gw2, FULL_HW, cert=bad, introduce=True))[0] == \
        errors.BAD_SIGNATURE
    world.commit(world.join(gw2, FULL_HW, cert=cert, introduce=True))
    r = world.rec(gw2)
    assert (r.kind, r.node, r.pubkey, r.owner) == (KIND_NODE, "full", gw2.pub, b"")
    # the gateway itself (the authority, known from genesis) joins with its own key
    led = world.node.ledger
    auth = KeyPair(led.authority_priv, led.genesis.authority)
    cert = itx.node_certificate(world.owner, DOMAIN, auth.id)
    world.commit(itx.build_node_join(auth, DOMAIN, "full", FULL_HW, 1, cert))
    assert world.rec(auth).node == "full"


def test_full_nodes_need_an_owner(tmp_path) -> None:
    from tests.support.gwtest import Node

    gw2 = Device("gateway-2")
    n = Node(tmp_path / "noowner")
    try:
        cert = itx.node_certificate(signer(Device("someone")), DOMAIN, gw2.id)
        m = itx.build_node_join(signer(gw2), DOMAIN, "full", FULL_HW, 1, cert, True)
        with pytest.raises(errors.TLError) as ei:
            n.submit(m)
        assert (ei.value.reason, ei.value.detail) == (errors.NOT_AUTHORIZED, "no-owner")
    finally:
        n.close()


def test_assign_rules_and_reassign(world: World) -> None:
    light, coord = world.sensor, world.plug
    f1, f2 = Device("gw-a"), Device("gw-b")
    world.commit(world.claim(light), world.claim(coord))
    world.commit(world.join(light, LIGHT_HW), world.join(coord, COORD_HW),
                 *(world.join(f, FULL_HW, cert=itx.node_certificate(world.owner, DOMAIN, f.id),
                              introduce=True) for f in (f1, f2)))
    # only a coordination node assigns
    assert world.refused(world.assign(f1, light, f1)) == (errors.NOT_AUTHORIZED,
                                                          "not-coordination")
    assert world.refused(world.assign(world.owner, light, f1))[0] == errors.NOT_AUTHORIZED
    # to a full node, for a light node
    assert world.refused(world.assign(coord, light, coord)) == (errors.UNKNOWN_DEVICE,
                                                                "full-node")
    assert world.refused(world.assign(coord, f1, f2)) == (errors.UNKNOWN_DEVICE, "light-node")
    world.commit(world.assign(coord, light, f1))
    # f1 went offline (seen on its MQTT status): reassigned, at any time
    world.commit(world.assign(coord, light, f2))
    assert world.rec(light).assigned == f2.id
    # re-joining as light keeps the assignment; a revoked light node is refused
    world.commit(world.join(light, LIGHT_HW))
    assert world.rec(light).assigned == f2.id
    world.commit(world.retire(light, "revoke"))
    assert world.refused(world.assign(coord, light, f1)) == (errors.REVOKED, "light-node")


def test_nodes_cli(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import cli

    light, coord, f = world.sensor, world.plug, Device("gw-a")
    world.commit(world.claim(light), world.claim(coord))
    world.commit(world.join(light, LIGHT_HW), world.join(coord, COORD_HW),
                 world.join(f, FULL_HW, cert=itx.node_certificate(world.owner, DOMAIN, f.id),
                            introduce=True))
    world.commit(world.assign(coord, light, f))
    assert cli.main(["nodes", "--data-dir", str(world.node.data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "label", "status", "assigned", "full", "node"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert rows == {light.id.hex(): ["light", "active", f.id.hex()],
                    coord.id.hex(): ["coordination", "active", "-"],
                    f.id.hex(): ["full", "active", "-"]}
