"""On-board half of `thingledger board ...` (tools/board.py): small functions
the host calls through `mpremote exec`. Each prints one line
`TL key=value ...` with public values only (public keys, the device id,
signatures), never the content of wallet.key.

Key rotation keeps the next private key (32 bytes) in `wallet.new` beside the
current one until the ledger has the ROTATE_KEY: rotate_begin makes it,
rotate_tx signs the announcement with the current key, rotate_commit switches
wallet.key to it (same id).

Recovery (the owner re-provisions a board whose key was lost or revoked):
recover(id) makes a new key pair under the device's OLD id, then
statement("recover", domain, id) signs with it for the owner's RECOVER."""
from firmware import flash
from firmware import wallet as _w
from shared import cbor, cose, p256

NEW_KEY_FILE = "wallet.new"


def _out(**kv):
    print("TL " + " ".join("%s=%s" % (k, kv[k]) for k in kv))


def keygen():
    """Load the wallet, generating the key pair on first call."""
    w = _w.load_or_create()
    _out(pubkey=w.public_key.hex(), id=w.hex)


def statement(kind, domain, subject_hex):
    """COSE_Sign1 by the device key over {1: kind, 2: domain, 3: subject}:
    "claim" (subject = owner id) or "recover" (subject = device id)."""
    if kind not in ("claim", "recover"):
        raise ValueError("statement kind")
    w = _w.load_or_create()
    p = cbor.dumps({1: kind, 2: domain, 3: bytes.fromhex(subject_hex)})
    _out(statement=cose.sign1(w._priv, p, w.device_id).hex())


def mqtt_password(domain):
    _out(password=_w.load_or_create().mqtt_password(domain))


def _pending():
    new = flash.read(NEW_KEY_FILE)
    return new if new is not None and len(new) == 32 else None


def rotate_begin():
    """Make the next key pair on the board (once: until committed, a second
    call answers the same pending key)."""
    new = _pending()
    if new is None:
        new = p256.keygen()[0]
        flash.write(NEW_KEY_FILE, new)
    _out(pubkey=p256.public_key(new).hex())


def rotate_tx(domain, approval_hex, fee=0):
    """ROTATE_KEY tx signed by the current key for the pending key, carrying
    the owner's approval (COSE_Sign1 over {1: "rotate", 2: id, 3: new pubkey});
    the board checks what the approval names, the ledger the owner's signature."""
    from firmware.flash import SeqStore
    from shared import tx

    w = _w.load_or_create()
    new = _pending()
    new = new and p256.public_key(new)
    approval = bytes.fromhex(approval_hex)
    p = cbor.loads(cose.parse1(approval).payload)
    if not new or p != {1: "rotate", 2: w.device_id, 3: new}:
        raise ValueError("approval does not name this device's pending key")
    m = w.sign_tx(tx.TYPE_ROTATE_KEY, domain, SeqStore().next(), fee, {1: new, 2: approval})
    _out(tx=m.hex())


def rotate_commit():
    """Switch wallet.key to the pending key, keeping the device id."""
    new = _pending()
    if new is None:
        raise ValueError("no key rotation in progress")
    w = _w.load_or_create()
    flash.write(_w.KEY_FILE, w.device_id + new)
    flash.remove(NEW_KEY_FILE)
    _out(pubkey=p256.public_key(new).hex(), id=w.hex)


def recover(id_hex, force=False):
    """A new key pair born here, stored under the device's original id
    (wallet.key = id || new private key). A wallet holding another id is
    replaced only with force=True (a board mistaken for another loses its
    identity otherwise). A pending rotation key and the outbox (signed by the
    old key, they could never verify again) are dropped. Prints the new
    public key only."""
    dev = bytes.fromhex(id_hex)
    if len(dev) != 16:
        raise ValueError("device id must be 16 bytes")
    old = flash.read(_w.KEY_FILE)
    if old is not None and old[:16] != dev and not force:
        raise ValueError("wallet.key holds device %s, not %s (force=True replaces it)"
                         % (old[:16].hex(), id_hex))
    priv = p256.keygen()[0]
    flash.write(_w.KEY_FILE, dev + priv)
    flash.remove(NEW_KEY_FILE)
    for name in flash.listdir(flash.OUTBOX_DIR):
        flash.remove(flash.OUTBOX_DIR + "/" + name)
    _out(pubkey=p256.public_key(priv).hex())
