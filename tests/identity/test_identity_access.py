"""gateway/identity/access.py: the read-only query API the broker codes against."""

from __future__ import annotations

from gateway.db.store import Store
from gateway.identity.access import Access
from gateway.ledger.state import RIGHT_SUBMIT
from tests.support.gwtest import Device, Node
from tests.support.idtest import World


def access(w: World) -> Access:
    return Access.from_state(w.node.state, "demo")


def test_access_over_a_lifecycle(world: World) -> None:
    w = world
    s, p, o, bob, carol = w.sensor, w.plug, w.owner, w.bob, w.carol
    a = access(w)
    assert a.principals() == sorted(w.node.state.devices)
    assert a.key_of(s.id) is None and not a.is_active(s.id)
    assert a.owner_of(s.id) is None and a.readable(o.id) == set()

    w.commit(w.claim(s), w.claim(p))
    w.commit(w.grant(s, carol, "read"), w.grant(p, carol, "buy"))
    a = access(w)
    assert a.domain == "demo"
    assert a.key_of(s.id) == s.pub and a.key_of(o.id) == o.pub and a.key_of(carol.id) == carol.pub
    assert a.is_active(s.id) and a.is_active(o.id) and a.is_active(carol.id)
    assert a.owner_of(s.id) == o.id and a.owner_of(o.id) is None
    # the owner holds every right; the device holds submit; grantees what was granted
    for right in ("submit", "read", "buy"):
        assert a.can(o.id, right, s.id)
    assert a.can(s.id, "submit", s.id) and not a.can(s.id, "read", s.id)
    assert a.can(carol.id, "read", s.id) and not a.can(carol.id, "submit", s.id)
    assert a.can(carol.id, "buy", p.id) and not a.can(carol.id, "read", p.id)
    assert not a.can(carol.id, "admin", s.id)
    assert not a.can(s.id, "submit", p.id)
    assert a.readable(o.id) == {s.id, p.id}
    assert a.readable(carol.id) == {s.id}
    assert a.readable(s.id) == set()
    assert set(a.principals()) >= {s.id, p.id, o.id, carol.id}

    # rotation: the new key
    new = Device("sensor-2")
    w.commit(w.rotate(s, new))
    assert access(w).key_of(s.id) == new.pub
    s.priv, s.pub = new.priv, new.pub

    # transfer: the previous owner loses everything, grants dropped
    w.commit(w.transfer(s, bob))
    a = access(w)
    assert a.owner_of(s.id) == bob.id
    assert not a.can(o.id, "read", s.id) and not a.can(carol.id, "read", s.id)
    assert a.readable(o.id) == {p.id} and a.readable(bob.id) == {s.id}

    # revoke: the device is not active, cannot submit; its owner still reads it
    w.commit(w.retire(s, "revoke", by=bob))
    a = access(w)
    assert not a.is_active(s.id) and not a.can(s.id, RIGHT_SUBMIT, s.id)
    assert a.can(bob.id, "read", s.id)
    # decommission: gone
    w.commit(w.retire(s, "decommission", by=bob))
    a = access(w)
    assert not a.can(bob.id, "read", s.id) and a.readable(bob.id) == set()
    assert a.key_of(s.id) == new.pub  # still known (history)


def test_ownerless_devices_govern_themselves(tmp_path) -> None:
    d, e = Device("d"), Device("e")
    n = Node(tmp_path / "open", {d.pub: 1})
    try:
        n.submit_all([e.register()])
        n.produce()
        a = Access.from_state(n.state, "demo")
        for x in (d, e):
            assert a.is_active(x.id) and a.owner_of(x.id) is None
            assert a.can(x.id, "submit", x.id) and a.can(x.id, "read", x.id)
            assert a.readable(x.id) == {x.id}
        assert not a.can(d.id, "read", e.id)
        # also from a reader's store (what a broker plugin in another process sees)
        with Store(n.store.path, readonly=True) as s:
            b = Access.from_state(s.load_state(), "demo")
        assert b.principals() == a.principals()
        assert Access.from_state(dict(n.state.devices), "demo").principals() == a.principals()
    finally:
        n.close()


def test_nodes_listing(world: World) -> None:
    from tests.support.idtest import COORD_HW

    world.commit(world.claim(world.plug))
    world.commit(world.join(world.plug, COORD_HW))
    assert [i for i, _ in access(world).nodes()] == [world.plug.id]
