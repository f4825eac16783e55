"""Signed statements' payloads, spelled once for the gateway, the tools and
the tests (docs/IDENTITY.md §2-§4). Canonical CBOR; the signer signs these
exact bytes and the verifier compares them byte for byte.

    MQTT credential   ["mqtt", domain, principal id]  (its ES256 signature is the broker password)
    claim statement   {1: "claim", 2: domain, 3: claimant id}      by the device key
    rotate approval   {1: "rotate", 2: device id, 3: new pubkey33}  by the device's owner
    recover statement {1: "recover", 2: domain, 3: device id}      by the NEW device key
    node certificate  {1: "full-node", 2: domain, 3: node id}      by the domain owner

The firmware keeps its own spelling of the credential and of the claim /
recover / rotate payloads (firmware/wallet.py, firmware/provision.py): importing
this module on the board would cost heap; tests/shared/test_statements.py
checks that both spellings give the same bytes."""

from shared import cbor

MQTT = "mqtt"
CLAIM = "claim"
ROTATE = "rotate"
RECOVER = "recover"
FULL_NODE = "full-node"
KINDS = (CLAIM, ROTATE, RECOVER, FULL_NODE)


def credential_message(domain, principal_id):
    """The bytes a principal signs to make its MQTT broker password."""
    return cbor.dumps([MQTT, domain, bytes(principal_id)])


def statement_payload(kind, scope, subject):
    """{1: kind, 2: scope, 3: subject}: scope is the domain (claim, recover,
    full-node) or the device id (rotate); subject the id or key it names."""
    return cbor.dumps({1: kind, 2: scope, 3: subject})
