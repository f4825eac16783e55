"""shared/statements.py: the one spelling of the signed statements' payloads
(dual: also under MicroPython)."""
from shared import cbor, statements


def test_credential_message_is_the_mqtt_triple():
    pid = b"\x01" * 16
    m = statements.credential_message("demo", pid)
    assert m == cbor.dumps(["mqtt", "demo", pid])
    assert cbor.loads(m) == ["mqtt", "demo", pid]
    assert statements.credential_message("demo", bytearray(pid)) == m


def test_statement_payload_is_the_three_key_map():
    for kind in statements.KINDS:
        p = statements.statement_payload(kind, "demo", b"\x02" * 16)
        assert cbor.loads(p) == {1: kind, 2: "demo", 3: b"\x02" * 16}
    assert statements.KINDS == ("claim", "rotate", "recover", "full-node")
