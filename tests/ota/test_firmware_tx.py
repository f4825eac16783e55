"""The FIRMWARE transaction (type 25, gateway/firmware/rules.py): releases
and each device's installed version on chain, with their refusals; replay
from genesis (`chain verify`) gives the same state."""

from __future__ import annotations

import pytest

from gateway.db.verify import verify_chain
from gateway.firmware import rules
from shared import cbor, errors
from shared import tx as txm
from shared.messages import STATUS_OK
from tests.support.gwtest import Device, Node

DIGEST = bytes(range(32))


def _fw(dev: Device, body: dict, **kw) -> bytes:
    return dev.make(txm.TYPE_FIRMWARE, body, **kw)


def test_release_and_reports_are_recorded(node: Node, alice: Device, bob: Device) -> None:
    node.submit_all([_fw(alice, {1: rules.RELEASE, 2: 3, 3: "unix", 4: DIGEST}),
                     _fw(bob, {1: rules.INSTALLED, 2: 3})])
    b = node.produce()
    assert [r.status for r in b.receipts] == [STATUS_OK, STATUS_OK]
    assert b.receipts[0].events == [["firmware", rules.RELEASE, 3]]
    rel = cbor.loads(node.state.kv_get(rules.release_key(DIGEST)))
    assert rel == {1: 3, 2: "unix", 3: alice.id, 4: 1}  # height 1
    assert rules.installed(node.state, bob.id) == {"version": 3, "height": 1, "failed": 0}
    assert rules.installed(node.state, alice.id) is None
    assert rules.releases(node.state) == [{"board": "unix", "version": 3, "manifest": DIGEST.hex(),
                                          "publisher": alice.id.hex(), "height": 1}]
    assert rules.versions_json(node.state) == {bob.id.hex(): {"version": 3, "height": 1,
                                                             "failed": 0}}

    node.submit(_fw(bob, {1: rules.ROLLED_BACK, 2: 3, 3: 4}))
    node.produce()
    assert rules.versions(node.state) == {bob.id: {"version": 3, "height": 2, "failed": 4}}
    assert rules.firmware_text(rules.versions(node.state)[bob.id]) == "v3 (v4 rolled back)"
    assert verify_chain(node.store, node.genesis).ok  # replay gives the same state


def test_a_release_is_recorded_once(node: Node, alice: Device, bob: Device) -> None:
    node.submit(_fw(alice, {1: rules.RELEASE, 2: 3, 3: "unix", 4: DIGEST}))
    node.produce()
    with pytest.raises(errors.TLError) as e:
        node.submit(_fw(bob, {1: rules.RELEASE, 2: 3, 3: "unix", 4: DIGEST}))
    assert (e.value.reason, e.value.detail) == (errors.BAD_TX, "known-release")


@pytest.mark.parametrize(("body", "detail"), [
    ({1: 9, 2: 1}, "bad-kind"),
    ({2: 1}, "bad-kind"),
    ({1: rules.INSTALLED}, "bad-body"),
    ({1: rules.INSTALLED, 2: 0}, "bad-version"),
    ({1: rules.INSTALLED, 2: True}, "bad-version"),
    ({1: rules.INSTALLED, 2: 1, 3: 2}, "bad-body"),
    ({1: rules.ROLLED_BACK, 2: -1, 3: 2}, "bad-version"),
    ({1: rules.RELEASE, 2: 1, 3: "", 4: DIGEST}, "bad-board"),
    ({1: rules.RELEASE, 2: 1, 3: "unix", 4: DIGEST[:31]}, "bad-hash"),
])
def test_bad_bodies_are_refused(node: Node, alice: Device, body: dict, detail: str) -> None:
    with pytest.raises(errors.TxError) as e:
        node.submit(_fw(alice, body))
    assert (e.value.reason, e.value.detail) == (errors.BAD_TX, detail)
