"""The firmware keeps its own spelling of the signed statements (firmware/
wallet.py, firmware/provision.py): importing shared/statements.py in the node
loop would cost board heap (measured with bench.firmware). Its bytes must be
those of shared/statements.py, the spelling the gateway and the tools use
(MicroPython only)."""
from fwtmp import Flash

from firmware import provision, wallet
from shared import cose, p256, statements, topics, topics_gateway, tx, txdecode

# What the rotation loads on first use (the gateway's decoder and topics, which
# a board never keeps), loaded here while the heap is whole: loaded after a
# signature, their modules need contiguous blocks the big ints have split.
_LOADED_FIRST = (topics, topics_gateway, txdecode)

OWNER = bytes(31) + b"\x07"


class Said:
    """Stands in for provision's one-line output."""

    def __init__(self):
        self.kv = {}

    def __call__(self, **kv):
        self.kv.update(kv)


def _capture():
    said = Said()
    saved = provision._out
    provision._out = said
    return said, saved


def test_mqtt_password_signs_the_shared_credential_message():
    with Flash("cred"):
        w = wallet.load_or_create()
        sig = bytes.fromhex(w.mqtt_password("demo"))
        assert p256.verify(w.public_key, statements.credential_message("demo", w.device_id), sig)


def test_claim_and_recover_statements_are_the_shared_payloads():
    owner = b"\xab" * 16
    with Flash("stmt"):
        w = wallet.load_or_create()
        said, saved = _capture()
        try:
            provision.statement("claim", "demo", owner.hex())
            claim = bytes.fromhex(said.kv["statement"])
            provision.statement("recover", "demo", w.hex)
            recover = bytes.fromhex(said.kv["statement"])
        finally:
            provision._out = saved
        assert cose.verify1(w.public_key, claim) == statements.statement_payload(
            statements.CLAIM, "demo", owner)
        assert cose.verify1(w.public_key, recover) == statements.statement_payload(
            statements.RECOVER, "demo", w.device_id)


def test_the_board_takes_a_rotate_approval_spelled_by_shared():
    with Flash("rotate"):
        w = wallet.load_or_create()
        said, saved = _capture()
        try:
            provision.rotate_begin()
            new = bytes.fromhex(said.kv["pubkey"])
            owner_pub = p256.public_key(OWNER)
            approval = cose.sign1(OWNER, statements.statement_payload(
                statements.ROTATE, w.device_id, new), tx.device_id(owner_pub))
            provision.rotate_tx("demo", approval.hex())
            m = bytes.fromhex(said.kv["tx"])
        finally:
            provision._out = saved
        t = tx.decode(m)
        assert t.type == tx.TYPE_ROTATE_KEY and t.body[1] == new and t.body[2] == approval
