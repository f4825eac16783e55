"""Wallet, seq reservation and outbox on the board's flash (MicroPython only)."""
from fwtmp import Flash

from firmware import flash, wallet
from shared import p256, tx, txdecode

# The gateway's decoder (a board never loads it) is loaded here, while the
# heap is whole: loaded after a signature, its module needs contiguous blocks
# that the signature's big ints have split.
_GATEWAY_SIDE = txdecode


def test_wallet_is_born_once_and_kept():
    with Flash("wallet"):
        w = wallet.load_or_create()
        assert w.device_id == tx.device_id(w.public_key)
        assert len(w.public_key) == 33 and len(w.hex) == 32
        again = wallet.load_or_create()
        assert again.device_id == w.device_id and again.public_key == w.public_key
        raw = flash.read(wallet.KEY_FILE)
        assert len(raw) == 48 and raw[:16] == w.device_id
        assert w.public_key not in raw  # only the private scalar is stored


def test_wallet_signs_verifiable_transactions():
    with Flash("sign"):
        w = wallet.load_or_create()
        m = w.sign_tx(tx.TYPE_READING, "demo", 7, 0, {1: 2150, 2: -2})
        t = tx.decode(m)
        assert t.sender == w.device_id and t.seq == 7
        t.verify(w.public_key)
        assert p256.verify(w.public_key, t.sign1.to_be_signed(), t.sign1.signature)


def test_corrupt_wallet_refused():
    with Flash("corrupt"):
        flash.write(wallet.KEY_FILE, b"short")
        try:
            wallet.load_or_create()
        except wallet.WalletError:
            return
        raise AssertionError("corrupt wallet accepted")


def test_seq_never_repeats_across_reboots():
    with Flash("seq"):
        s = flash.SeqStore()
        first = [s.next() for _ in range(5)]
        assert first == [1, 2, 3, 4, 5]
        rebooted = flash.SeqStore()  # a reboot: the reservation is skipped
        n = rebooted.next()
        assert n > first[-1] and n == flash.RESERVE + 1
        for _ in range(flash.RESERVE + 3):
            m = rebooted.next()
            assert m > n
            n = m


def test_outbox_survives_reboot_and_removes():
    with Flash("outbox"):
        ob = flash.Outbox()
        ob.put(3, b"three")
        ob.put(9, b"nine")
        ob.mark_sent(3, 1000)
        again = flash.Outbox()  # reboot: both pending, neither sent since boot
        assert len(again) == 2 and again.get(9) == b"nine"
        assert again.due(0, 5000, lambda a, b: a - b) == [3, 9]
        again.mark_sent(3, 1000)
        again.mark_sent(9, 4000)
        assert again.due(6000, 5000, lambda a, b: a - b) == [3]
        again.remove(3)
        assert flash.Outbox().get(3) is None and len(flash.Outbox()) == 1


def test_outbox_unsend_makes_everything_due_oldest_first():
    with Flash("unsend"):
        ob = flash.Outbox()
        for seq in (9, 4, 7):
            ob.put(seq, b"tx%d" % seq)
            ob.mark_sent(seq, 1000)
        assert ob.due(2000, 5000, lambda a, b: a - b) == []  # all in flight
        ob.unsend()  # reconnected: what was in flight may be lost
        assert ob.due(2000, 5000, lambda a, b: a - b) == [4, 7, 9]
