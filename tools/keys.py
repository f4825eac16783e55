"""Key files of people and manufacturers (not boards: a board's key never
leaves it). One file = the private scalar as 64 hex characters, mode 0600.

Like ssh, a key file that its group or others may read or write is refused
(UnprotectedKeyError): `chmod 600 FILE` fixes it (docs/IDENTITY.md)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from gateway.db.genesis_files import key_too_open
from shared import errors, p256, tx

PRIVATE_MODE = 0o600


class KeyFileError(ValueError):
    pass


class UnprotectedKeyError(KeyFileError):
    """A private key file its group or others may read or write (refused, as ssh does)."""

    def __init__(self, path: Path, mode: int) -> None:
        self.path = Path(path)
        self.mode = stat.S_IMODE(mode)
        super().__init__(f"{path}: unprotected private key file: permissions {self.mode:04o} "
                         "are too open (group or others have access); fix with: chmod 600 " + str(path))


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
    """Create a key file (mode 0600); refuses to overwrite an existing one."""
    priv, pub = p256.keygen()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), PRIVATE_MODE)  # whatever the umask
        f.write(priv.hex() + "\n")
    return KeyPair(priv, pub)


def read_private(path: Path) -> str:
    """The text of a private key file; UnprotectedKeyError if its mode lets
    group or others in (checked on the open file), KeyFileError if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file ({e.strerror})") from None
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if key_too_open(mode):
            raise UnprotectedKeyError(path, mode)
        try:
            return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise KeyFileError(f"{path}: cannot read key file ({e})") from None


def load_key(path: Path) -> KeyPair:
    text = read_private(path).strip()
    try:
        priv = bytes.fromhex(text)
        pub = p256.public_key(priv)
    except (ValueError, errors.KeyFormatError):
        raise KeyFileError(f"{path}: not a key file (64 hex characters)") from None
    return KeyPair(priv, pub)
