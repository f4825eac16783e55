"""The identity lifecycle's consensus rules (docs/IDENTITY.md): the stateful
checks (raise RuleError, write nothing) and the effects of the identity tx types
(claim, owner transfer, grant / revoke right, key rotation, retirement,
recovery, node join / assign), and their body schemas. Registered with the
ledger's tx-type registry by gateway/plugins.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gateway.errors import RuleError
from gateway.identity import roles
from gateway.identity import statements as itx
from gateway.ledger.state import (
    ACTIVE,
    ADMISSION_CLOSED,
    DECOMMISSIONED,
    KIND_DEVICE,
    KIND_PERSON,
    RETIRE_MODES,
    RETIRE_REVOKE,
    REVOKED,
    RIGHT_SUBMIT,
    RIGHTS,
    BlockInfo,
    DeviceRecord,
    Rules,
    StateOverlay,
    StateView,
    acl_set,
    claimed_device,
    person,
)
from gateway.ledger.txtypes import TxType
from gateway.ledger.validate import body_keys, need_id, need_pubkey
from shared import errors
from shared import tx as txm
from shared.messages import STATUS_OK

# ---- body schemas (stateless, raise TxError) -----------------------------------

def _stmt(v: object) -> None:
    if not itx.is_statement(v):
        raise errors.TxError("bad-statement")


def _check_identity_body(t: txm.Tx) -> None:
    b, type_ = t.body, t.type
    if type_ == txm.TYPE_CLAIM:
        body_keys(b, (1, 2))
        need_pubkey(b[1])
        _stmt(b[2])
    elif type_ == txm.TYPE_OWNER_TRANSFER:
        body_keys(b, (1, 2))
        need_id(b[1], "bad-device")
        need_pubkey(b[2])
    elif type_ in (txm.TYPE_GRANT, txm.TYPE_REVOKE_RIGHT):
        body_keys(b, (1, 2, 3), (4,) if type_ == txm.TYPE_GRANT else ())
        need_id(b[1], "bad-principal")
        if b[2] not in RIGHTS:
            raise errors.TxError("bad-right")
        need_id(b[3], "bad-device")
        if 4 in b:
            need_pubkey(b[4])
            if txm.device_id(b[4]) != b[1]:
                raise errors.TxError("pubkey-mismatch")
    elif type_ == txm.TYPE_ROTATE_KEY:
        body_keys(b, (1, 2))
        need_pubkey(b[1])
        _stmt(b[2])
    elif type_ == txm.TYPE_RETIRE:
        body_keys(b, (1, 2))
        need_id(b[1], "bad-device")
        if b[2] not in RETIRE_MODES:
            raise errors.TxError("bad-mode")
    elif type_ == txm.TYPE_RECOVER:
        body_keys(b, (1, 2, 3))
        need_id(b[1], "bad-device")
        need_pubkey(b[2])
        _stmt(b[3])
    elif type_ == txm.TYPE_NODE_JOIN:
        body_keys(b, (1, 2), (3, 4))
        if b[1] not in roles.LABELS:
            raise errors.TxError("bad-label")
        detail = roles.check_hardware(b[2])
        if detail:
            raise errors.TxError(detail)
        if roles.label_of(b[2]) != b[1]:
            raise errors.TxError("label-mismatch")
        if b[1] == roles.FULL:
            if 3 not in b:
                raise errors.TxError("certificate-required")
            _stmt(b[3])
        elif 3 in b or 4 in b:
            raise errors.TxError("bad-body")
        if 4 in b:
            need_pubkey(b[4])
            if txm.device_id(b[4]) != t.sender:
                raise errors.TxError("sender-mismatch")
    elif type_ == txm.TYPE_NODE_ASSIGN:
        body_keys(b, (1, 2))
        need_id(b[1], "bad-node")
        need_id(b[2], "bad-node")
    else:
        raise errors.TxError("bad-type")


# ---- identity checks (raise RuleError; write nothing) ---------------------------

def _statement(stmt: bytes, key: bytes, expected: bytes, what: str) -> None:
    r = itx.check_statement(stmt, key, expected)
    if r == itx.STATEMENT_BAD_SIGNATURE:
        raise RuleError(errors.BAD_SIGNATURE, what)
    if r:
        raise RuleError(errors.BAD_TX, what + "-mismatch")


def _owned_device(view: StateView, device_id: bytes, sender: bytes) -> DeviceRecord:
    """The device `sender` owns and may still manage."""
    d = view.get(device_id)
    if d is None or d.kind != KIND_DEVICE:
        raise RuleError(errors.UNKNOWN_DEVICE, "device")
    if d.owner != sender:
        raise RuleError(errors.NOT_OWNER)
    if d.status == DECOMMISSIONED:
        raise RuleError(errors.REVOKED, DECOMMISSIONED)
    return d


def _new_key(device_id: bytes, d: DeviceRecord, new: bytes) -> None:
    if new == d.pubkey:
        raise RuleError(errors.BAD_TX, "same-key")
    if txm.device_id(new) == device_id:
        raise RuleError(errors.BAD_TX, "reused-key")


def _check_claim(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    if rules.admission == ADMISSION_CLOSED:
        raise RuleError(errors.NOT_AUTHORIZED, "admission-closed")
    if rec.kind != KIND_PERSON or not rec.claimant:
        raise RuleError(errors.NOT_AUTHORIZED, "not-claimant")
    pub, stmt = t.body[1], t.body[2]
    d = view.get(txm.device_id(pub))
    if d is not None:
        if d.status == DECOMMISSIONED:
            raise RuleError(errors.REVOKED, DECOMMISSIONED)
        if d.owner:
            raise RuleError(errors.ALREADY_OWNED)
        raise RuleError(errors.ALREADY_REGISTERED)
    _statement(stmt, pub, itx.claim_payload(t.domain, t.sender), "statement")
    if rules.registry is None:
        raise RuleError(errors.NOT_IN_REGISTRY, "no-registry")
    try:
        found = rules.registry(pub)
    except Exception:  # a registry that cannot answer admits nothing
        raise RuleError(errors.NOT_IN_REGISTRY, "registry-unavailable") from None
    if found is None:
        raise RuleError(errors.NOT_IN_REGISTRY)


def _check_owner_transfer(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    _owned_device(view, t.body[1], t.sender)
    new_id = txm.device_id(t.body[2])
    if new_id == t.sender:
        raise RuleError(errors.BAD_TX, "same-owner")
    r = view.get(new_id)
    if r is not None and r.kind != KIND_PERSON:
        raise RuleError(errors.NOT_AUTHORIZED, "new-owner-not-a-person")


def _check_grant(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    _owned_device(view, t.body[3], t.sender)
    principal = t.body[1]
    if principal == t.sender:
        raise RuleError(errors.BAD_TX, "principal-is-owner")
    if t.type == txm.TYPE_GRANT and 4 not in t.body and view.get(principal) is None:
        raise RuleError(errors.UNKNOWN_DEVICE, "principal")


def _check_rotate(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    if rec.kind != KIND_DEVICE or not rec.owner:
        raise RuleError(errors.NOT_AUTHORIZED, "not-owned")
    new = t.body[1]
    _new_key(t.sender, rec, new)
    owner = view.get(rec.owner)
    if owner is None:
        raise RuleError(errors.UNKNOWN_DEVICE, "owner")
    _statement(t.body[2], owner.pubkey, itx.rotate_payload(t.sender, new), "owner-approval")


def _check_retire(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    _owned_device(view, t.body[1], t.sender)


def _check_recover(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    dev_id, new = t.body[1], t.body[2]
    d = _owned_device(view, dev_id, t.sender)
    _new_key(dev_id, d, new)
    _statement(t.body[3], new, itx.recover_payload(t.domain, dev_id), "statement")


def _check_node_join(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    if t.body[1] != roles.FULL:
        return
    if not rules.owner_id:
        raise RuleError(errors.NOT_AUTHORIZED, "no-owner")
    owner = view.get(rules.owner_id)
    if owner is None:
        raise RuleError(errors.UNKNOWN_DEVICE, "owner")
    _statement(t.body[3], owner.pubkey, itx.certificate_payload(t.domain, t.sender),
               "certificate")


def _check_node_assign(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    if rec.node != roles.COORDINATION:
        raise RuleError(errors.NOT_AUTHORIZED, "not-coordination")
    for i, label, what in ((t.body[1], roles.LIGHT, "light-node"),
                           (t.body[2], roles.FULL, "full-node")):
        r = view.get(i)
        if r is None or r.node != label:
            raise RuleError(errors.UNKNOWN_DEVICE, what)
        if r.status != ACTIVE:
            raise RuleError(errors.REVOKED, what)


_CHECKS: dict[int, Callable[[StateView, txm.Tx, Rules, DeviceRecord], None]] = {
    txm.TYPE_CLAIM: _check_claim,
    txm.TYPE_OWNER_TRANSFER: _check_owner_transfer,
    txm.TYPE_GRANT: _check_grant,
    txm.TYPE_REVOKE_RIGHT: _check_grant,
    txm.TYPE_ROTATE_KEY: _check_rotate,
    txm.TYPE_RETIRE: _check_retire,
    txm.TYPE_RECOVER: _check_recover,
    txm.TYPE_NODE_JOIN: _check_node_join,
    txm.TYPE_NODE_ASSIGN: _check_node_assign,
}


# ---- effects (after precheck, on the overlay) -----------------------------------

def _get(view: StateOverlay, i: bytes) -> DeviceRecord:
    r = view.get(i)
    if r is None:
        raise RuntimeError("identity effect on a missing record")
    return r


def _effects(view: StateOverlay, t: txm.Tx) -> list[Any]:
    """Write an identity tx's effects (already checked); returns its events."""
    b, sender, type_ = t.body, t.sender, t.type
    if type_ == txm.TYPE_CLAIM:
        dev = txm.device_id(b[1])
        view.put(dev, claimed_device(b[1], sender))
        return [["claim", dev, sender]]
    if type_ == txm.TYPE_OWNER_TRANSFER:
        dev, new_pub = b[1], b[2]
        new_id = txm.device_id(new_pub)
        p = view.get(new_id)
        if p is None:
            view.put(new_id, person(new_pub, claimant=True))
        elif not p.claimant:
            view.put(new_id, replace(p, claimant=True))
        d = _get(view, dev)
        view.put(dev, replace(d, owner=new_id, acl=((dev, (RIGHT_SUBMIT,)),)))
        return [["owner", dev, new_id]]
    if type_ in (txm.TYPE_GRANT, txm.TYPE_REVOKE_RIGHT):
        principal, right, dev = b[1], b[2], b[3]
        if type_ == txm.TYPE_GRANT and view.get(principal) is None:
            view.put(principal, person(b[4]))
        d = _get(view, dev)
        held = set(d.rights_of(principal))
        if type_ == txm.TYPE_GRANT:
            held.add(right)
            name = "grant"
        else:
            held.discard(right)
            name = "revoke-right"
        view.put(dev, replace(d, acl=acl_set(d.acl, principal, held)))
        return [[name, principal, right, dev]]
    if type_ == txm.TYPE_ROTATE_KEY:
        view.put(sender, replace(_get(view, sender), pubkey=b[1]))
        return [["rotate", sender]]
    if type_ == txm.TYPE_RETIRE:
        dev, mode = b[1], b[2]
        status = REVOKED if mode == RETIRE_REVOKE else DECOMMISSIONED
        view.put(dev, replace(_get(view, dev), status=status))
        return [["retire", dev, mode]]
    if type_ == txm.TYPE_RECOVER:
        dev = b[1]
        view.put(dev, replace(_get(view, dev), pubkey=b[2], status=ACTIVE, last_seq=0))
        return [["recover", dev]]
    if type_ == txm.TYPE_NODE_JOIN:
        r = _get(view, sender)
        label = b[1]
        assigned = r.assigned if label == roles.LIGHT else b""
        view.put(sender, replace(r, node=label, assigned=assigned))
        return [["node", sender, label]]
    if type_ == txm.TYPE_NODE_ASSIGN:
        light, full = b[1], b[2]
        view.put(light, replace(_get(view, light), assigned=full))
        return [["assign", light, full]]
    return []


def apply(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo) -> tuple[int, str, list[Any]]:
    """The registry's apply of every identity type: its effects, never a failure."""
    return STATUS_OK, "", _effects(view, t)


IDENTITY_TYPES = (txm.TYPE_CLAIM, txm.TYPE_OWNER_TRANSFER, txm.TYPE_GRANT, txm.TYPE_REVOKE_RIGHT,
                  txm.TYPE_ROTATE_KEY, txm.TYPE_RETIRE, txm.TYPE_RECOVER, txm.TYPE_NODE_JOIN,
                  txm.TYPE_NODE_ASSIGN)
TX_TYPES = tuple(TxType(code, "identity", _check_identity_body, _CHECKS[code], apply)
                 for code in IDENTITY_TYPES)
