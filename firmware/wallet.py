"""The light node's wallet: an ES256 key pair born on the board.

The private key is generated from os.urandom on first boot, written to the
board's flash and never published: nothing here returns it. The device id is
SHA-256(birth public key)[:16], stored beside the key so it survives a later
key rotation. Flash layout of `wallet.key`: id (16 bytes) || private key (32).
Provisioning (statements, key rotation) lives in firmware/provision.py, loaded
only when the host asks: it costs the node loop no heap.
"""
from firmware import flash
from shared import p256

KEY_FILE = "wallet.key"


class WalletError(Exception):
    pass


class Wallet:
    def __init__(self, device_id, private_key):
        self._priv = private_key
        self.public_key = p256.public_key(private_key)
        self.device_id = device_id
        self.hex = device_id.hex()

    def sign_tx(self, type_, domain, seq, fee, body):
        """COSE_Sign1 transaction bytes signed by this device."""
        from shared import tx  # loaded by the node anyway; the updater never needs it

        return tx.make(self._priv, self.device_id, type_, domain, seq, fee, body)

    def sign_reading(self, agreement, index, value, scale):
        """A reading sold under an agreement (docs/MARKET.md, shared/stream.py),
        signed by this device; only market boards call it."""
        from shared import streamsign  # dropped after the market's call (firmware/market.py)

        return streamsign.reading(self._priv, self.device_id, agreement, index, value, scale)

    def mqtt_password(self, domain):
        """Broker password (docs/IDENTITY.md §3): hex of the deterministic ES256
        signature r||s over cbor(["mqtt", domain, device id]); never stored."""
        from shared import cbor

        return p256.sign(self._priv, cbor.dumps(["mqtt", domain, self.device_id])).hex()


def load_or_create(path=KEY_FILE):
    """The board's wallet; generates and stores a key pair on first boot."""
    data = flash.read(path)
    if data is None:
        from shared import tx

        priv, pub = p256.keygen()
        data = tx.device_id(pub) + priv
        flash.write(path, data)
        del priv
    if len(data) != 48:
        raise WalletError("corrupt wallet file")
    return Wallet(data[:16], data[16:])
