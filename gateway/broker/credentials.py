"""Broker credentials (docs/IDENTITY.md §3): the password a principal makes by
signing shared/statements.py's credential message with its current key (ES256,
RFC 6979, low s), its parsing and verification (shared/es256_cryptography.py),
the owner's credential store, and the private files they are written to."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import FileAccessError
from shared import es256_cryptography, p256, statements
from shared import tx as txm

CREDENTIALS_FILE = "credentials.json"  # the owner's local store: {"<id hex>": "<password hex>"}


def credential_message(domain: str, principal_id: bytes) -> bytes:
    """The bytes a principal signs to make its broker password (shared/statements.py)."""
    return statements.credential_message(domain, principal_id)


def mqtt_password(private_key: bytes, domain: str, principal_id: bytes) -> str:
    """The broker password of the principal whose current private key this is."""
    return p256.sign(private_key, credential_message(domain, principal_id)).hex()


def gateway_credentials(authority_priv: bytes, domain: str) -> tuple[str, str]:
    """(username, password) the gateway connects with: the authority's credential."""
    aid = txm.device_id(p256.public_key(authority_priv))
    return aid.hex(), mqtt_password(authority_priv, domain, aid)


def _hex_exact(text: object, n_bytes: int) -> bytes | None:
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or len(text) != 2 * n_bytes:
        return None
    if any(c not in "0123456789abcdef" for c in text):  # lowercase only: one spelling
        return None
    return bytes.fromhex(text)


def parse_principal(username: object) -> bytes | None:
    """The 16-byte principal id of a username, None unless 32 lowercase hex."""
    return _hex_exact(username, 16)


def parse_password(password: object) -> bytes | None:
    """The 64-byte signature of a password, None unless 128 lowercase hex."""
    return _hex_exact(password, 64)


def verify_password(public_key: bytes, domain: str, principal_id: bytes,
                    password: object) -> bool:
    """True iff `password` is the principal's credential under `public_key`."""
    sig = parse_password(password)
    if sig is None or not public_key or not es256_cryptography.is_low_s(sig):
        return False
    return es256_cryptography.verify(bytes(public_key), credential_message(domain, principal_id),
                                     sig)


def load_credentials(path: Path | str) -> dict[bytes, str]:
    """The owner's credential store {"<id hex>": "<password hex>"}; {} if absent."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: not a credential store ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: not a credential store (expected a JSON object)")
    out: dict[bytes, str] = {}
    for k, v in raw.items():
        pid = parse_principal(k)
        sig = parse_password(v)
        if pid is None or sig is None:
            raise ValueError(f"{p}: entry {k!r}: want 32 and 128 lowercase hex characters")
        out[pid] = es256_cryptography.low_s(sig).hex()  # stores from before the low-s rule
    return out


def add_credential(path: Path | str, principal_id: bytes, password: str) -> None:
    """Add or replace one principal's password in the credential store
    (for `board claim`; file mode 0600, replaced atomically)."""
    if parse_password(password) is None or len(principal_id) != 16:
        raise ValueError("a credential is a 16-byte id and 128 lowercase hex characters")
    creds = {k.hex(): v for k, v in load_credentials(path).items()}
    creds[principal_id.hex()] = password
    write_private(Path(path), json.dumps(creds, indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class FileAccess:
    """Who may read the exported passwd and acl: mode 0600 for the writer
    alone (the default), or handed to the broker's own user and/or group
    (`broker export --owner mosquitto` / `--group mosquitto`, mode 0640 with
    a group). uid/gid -1 = leave as created."""

    uid: int = -1
    gid: int = -1
    mode: int = 0o600


def file_access(owner: str | None = None, group: str | None = None) -> FileAccess:
    """FileAccess for the named user and group (names or numeric ids);
    FileAccessError naming the one that does not exist."""
    import grp
    import pwd

    uid = gid = -1
    if owner:
        try:
            uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise FileAccessError(f"no user {owner!r} on this system (--owner)") from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise FileAccessError(f"no group {group!r} on this system (--group)") from None
    return FileAccess(uid, gid, 0o640 if group else 0o600)


PRIVATE = FileAccess()  # the writer's own, mode 0600


def write_private(path: Path, text: str, access: FileAccess = PRIVATE) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            if access.uid != -1 or access.gid != -1:
                try:  # before the first byte: never readable by anyone else
                    os.fchown(f.fileno(), access.uid, access.gid)
                except PermissionError:
                    raise FileAccessError(
                        f"cannot give {path} to uid {access.uid} / gid {access.gid}: "
                        "run as root, or as a member of that group") from None
            os.fchmod(f.fileno(), access.mode)
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # a SIGHUP never reads half a file
