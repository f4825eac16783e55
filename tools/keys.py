"""Key files of people and manufacturers (not boards: a board's key never
leaves it). One file = the private scalar as 64 hex characters, mode 0600."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shared import p256, tx


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class KeyPair:
    private: bytes
    public: bytes

    @property
    def id(self) -> bytes:
        return tx.device_id(self.public)

    def sign_tx(self, type_: int, domain: str, seq: int, body: dict, fee: int = 0) -> bytes:
        return tx.make(self.private, self.id, type_, domain, seq, fee, body)


def new_key(path: Path) -> KeyPair:
    """Create a key file; refuses to overwrite an existing one."""
    priv, pub = p256.keygen()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(priv.hex() + "\n")
    return KeyPair(priv, pub)


def load_key(path: Path) -> KeyPair:
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file ({e.strerror})") from None
    try:
        priv = bytes.fromhex(text)
        pub = p256.public_key(priv)
    except ValueError:
        raise KeyFileError(f"{path}: not a key file (64 hex characters)") from None
    return KeyPair(priv, pub)
