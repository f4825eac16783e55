"""Identity lifecycle transactions (docs/IDENTITY.md §2, §4): statement
formats and ready-to-submit builders, shared by the CLI (tools/cli/identity.py),
board provisioning (tools/board.py) and tests. The gateway's checks
(gateway/identity/rules.py) use the same payload functions, so both sides agree on
the bytes.

Statements are COSE_Sign1 (shared/cose.py) whose payload is canonical CBOR:

    claim statement      by the device key      {1: "claim", 2: domain, 3: claimant id}
    rotate approval      by the device's owner  {1: "rotate", 2: device id, 3: new pubkey33}
    recover statement    by the NEW device key  {1: "recover", 2: domain, 3: device id}
    full-node certificate by the domain owner   {1: "full-node", 2: domain, 3: node id}

The gateway compares the signed payload byte for byte with these encodings
and verifies the signature under the named key; the statement's kid is not
checked (a re-provisioned board may not know its old id yet). The kid these
helpers write: device id for claim/recover statements, the signer's id for
approvals and certificates.

Builders take a signer with `.private` and `.public` (tools.keys.KeyPair) and
return the signed transaction bytes; `seq` is the sender's next seq
(tools.submit.next_seq() for people). The sender id is the signer's id
(SHA-256(pubkey)[:16]) unless `sender` is given: a device whose key was
rotated keeps signing with its original id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared import cose, errors
from shared import tx as txm
from shared.statements import CLAIM, FULL_NODE, RECOVER, ROTATE, statement_payload


class Signer(Protocol):
    @property
    def private(self) -> bytes: ...

    @property
    def public(self) -> bytes: ...


# ---- statement payloads (canonical CBOR bytes) --------------------------------

def claim_payload(domain: str, claimant_id: bytes) -> bytes:
    return statement_payload(CLAIM, domain, claimant_id)


def rotate_payload(device_id: bytes, new_pubkey: bytes) -> bytes:
    return statement_payload(ROTATE, device_id, new_pubkey)


def recover_payload(domain: str, device_id: bytes) -> bytes:
    return statement_payload(RECOVER, domain, device_id)


def certificate_payload(domain: str, node_id: bytes) -> bytes:
    return statement_payload(FULL_NODE, domain, node_id)


def sign_statement(private: bytes, kid: bytes, payload: bytes) -> bytes:
    return cose.sign1(private, payload, kid)


def claim_statement(device_private: bytes, device_pubkey: bytes, domain: str,
                    claimant_id: bytes) -> bytes:
    """What a device signs to be claimed (made on the board in real life)."""
    return sign_statement(device_private, txm.device_id(device_pubkey),
                          claim_payload(domain, claimant_id))


def rotate_approval(owner: Signer, device_id: bytes, new_pubkey: bytes) -> bytes:
    return sign_statement(owner.private, txm.device_id(owner.public),
                          rotate_payload(device_id, new_pubkey))


def recover_statement(new_private: bytes, device_id: bytes, domain: str) -> bytes:
    """Made by the device's NEW key (on the re-provisioned board)."""
    return sign_statement(new_private, device_id, recover_payload(domain, device_id))


build_rotate_approval = rotate_approval  # the name tools/board.py looks for


def node_certificate(owner: Signer, domain: str, node_id: bytes) -> bytes:
    return sign_statement(owner.private, txm.device_id(owner.public),
                          certificate_payload(domain, node_id))


# ---- checking (used by gateway/identity/rules.py) -------------------------------------

STATEMENT_OK = ""
STATEMENT_BAD_SIGNATURE = "bad-signature"
STATEMENT_MISMATCH = "mismatch"


def is_statement(stmt: object) -> bool:
    """Structural check: a parseable COSE_Sign1 (no signature check)."""
    if not isinstance(stmt, bytes):
        return False
    try:
        cose.parse1(stmt)
    except errors.TLError:
        return False
    return True


def check_statement(stmt: bytes, pubkey: bytes, expected: bytes) -> str:
    """'' if `stmt` is signed by `pubkey` and its payload is exactly
    `expected`; else STATEMENT_BAD_SIGNATURE or STATEMENT_MISMATCH."""
    try:
        payload = cose.verify1(pubkey, stmt)
    except errors.TLError:
        return STATEMENT_BAD_SIGNATURE
    return STATEMENT_OK if payload == expected else STATEMENT_MISMATCH


# ---- transaction builders -------------------------------------------------------

def _sign(key: Signer, type_: int, domain: str, seq: int, body: dict[int, Any], fee: int,
          sender: bytes | None) -> bytes:
    sid = sender if sender is not None else txm.device_id(key.public)
    return txm.make(key.private, sid, type_, domain, seq, fee, body)


def build_claim(owner: Signer, domain: str, device_pubkey: bytes, statement: bytes, seq: int,
                fee: int = 0) -> bytes:
    """CLAIM signed by the claimant: {1: device pubkey33, 2: device statement}."""
    return _sign(owner, txm.TYPE_CLAIM, domain, seq, {1: device_pubkey, 2: statement}, fee,
                 None)


def build_owner_transfer(owner: Signer, domain: str, device_id: bytes, new_owner_pubkey: bytes,
                         seq: int, fee: int = 0) -> bytes:
    return _sign(owner, txm.TYPE_OWNER_TRANSFER, domain, seq,
                 {1: device_id, 2: new_owner_pubkey}, fee, None)


def build_grant(owner: Signer, domain: str, device_id: bytes, principal_id: bytes, right: str,
                seq: int, principal_pubkey: bytes | None = None, fee: int = 0) -> bytes:
    """GRANT {1: principal, 2: right, 3: device, 4: principal pubkey (if new)}."""
    body: dict[int, Any] = {1: principal_id, 2: right, 3: device_id}
    if principal_pubkey is not None:
        body[4] = principal_pubkey
    return _sign(owner, txm.TYPE_GRANT, domain, seq, body, fee, None)


def build_revoke_right(owner: Signer, domain: str, device_id: bytes, principal_id: bytes,
                       right: str, seq: int, fee: int = 0) -> bytes:
    return _sign(owner, txm.TYPE_REVOKE_RIGHT, domain, seq,
                 {1: principal_id, 2: right, 3: device_id}, fee, None)


def build_rotate(device: Signer, domain: str, new_pubkey: bytes, approval: bytes, seq: int,
                 device_id: bytes | None = None, fee: int = 0) -> bytes:
    """ROTATE_KEY signed by the device's CURRENT key; `device_id` defaults to
    the id of that key (right for the first rotation only)."""
    return _sign(device, txm.TYPE_ROTATE_KEY, domain, seq, {1: new_pubkey, 2: approval}, fee,
                 device_id)


def build_retire(owner: Signer, domain: str, device_id: bytes, mode: str, seq: int,
                 fee: int = 0) -> bytes:
    """RETIRE {1: device, 2: "revoke" | "decommission"}."""
    return _sign(owner, txm.TYPE_RETIRE, domain, seq, {1: device_id, 2: mode}, fee, None)


def build_recover(owner: Signer, domain: str, device_id: bytes, new_pubkey: bytes,
                  statement: bytes, seq: int, fee: int = 0) -> bytes:
    return _sign(owner, txm.TYPE_RECOVER, domain, seq,
                 {1: device_id, 2: new_pubkey, 3: statement}, fee, None)


def build_node_join(node: Signer, domain: str, label: str, hardware: Mapping[str, Any], seq: int,
                    certificate: bytes | None = None, introduce: bool = False,
                    sender: bytes | None = None, fee: int = 0) -> bytes:
    """NODE_JOIN {1: label, 2: hardware, 3: owner certificate (full nodes),
    4: node pubkey (introduce=True: a full node not yet known to the domain)}."""
    body: dict[int, Any] = {1: label, 2: dict(hardware)}
    if certificate is not None:
        body[3] = certificate
    if introduce:
        body[4] = node.public
    return _sign(node, txm.TYPE_NODE_JOIN, domain, seq, body, fee, sender)


def build_node_assign(coordinator: Signer, domain: str, light_id: bytes, full_id: bytes,
                      seq: int, sender: bytes | None = None, fee: int = 0) -> bytes:
    return _sign(coordinator, txm.TYPE_NODE_ASSIGN, domain, seq, {1: light_id, 2: full_id}, fee,
                 sender)
