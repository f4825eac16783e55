"""Firmware releases on the host (docs/OTA.md): build and sign a release
(`thingledger firmware release`), read one back, and offer it to a domain's
boards over MQTT (`thingledger firmware publish`). The board's side is
firmware/ota.py; the manifest and topics are shared/ota.py's.

A release folder holds `manifest.cose` (the COSE_Sign1 manifest: any COSE
library verifies it under the signing key) and `files/` (the .mpy files, laid
out as in a board's version folder). Publishing puts a short announcement,
retained, on tl/<domain>/fw/<board> and the manifest and every chunk,
retained, on their own topics under it (shared/ota.py): the publish process serves the files through the broker's retained
store and may exit; a board fetches one chunk at a time whenever it is ready
(also hours later, or after a reboot)."""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from boards.profiles import ProfileError, profile
from gateway.broker.embedded import parse_url
from shared import cbor, cose, errors, ota, topics
from tools.build import ROOT, BuildError, build, mpy_abi
from tools.keys import KeyPair

MANIFEST = "manifest.cose"
FILES = "files"
BOARDS = ("esp32", "rp2040", "unix")
FOLDERS = ("boards", "firmware", "shared")  # what a release holds (shared/ota.py check_path)


class ReleaseError(RuntimeError):
    """A release cannot be built, read or published; the message says why."""


@dataclass
class Release:
    signed: bytes
    manifest: dict
    files: list[bytes]  # in the manifest's order

    @property
    def rid(self) -> bytes:
        return ota.release_id(self.signed)

    @property
    def version(self) -> int:
        return self.manifest[ota.M_VERSION]

    @property
    def board(self) -> str:
        return self.manifest[ota.M_BOARD]

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed manifest: the release's name on chain."""
        return hashlib.sha256(self.signed).digest()


def manifest_of(files_dir: Path, board: str, version: int, abi: str,
                protocol: int = ota.PROTOCOL, chunk: int = ota.CHUNK,
                next_key: bytes | None = None) -> dict:
    """The manifest of every .mpy file under `files_dir` (sorted paths)."""
    files = []
    for p in sorted(files_dir.rglob("*.mpy")):
        data = p.read_bytes()
        files += [p.relative_to(files_dir).as_posix(), len(data), hashlib.sha256(data).digest()]
    m = {ota.M_BOARD: board, ota.M_ABI: abi, ota.M_VERSION: version,
         ota.M_PROTOCOL: protocol, ota.M_FILES: files, ota.M_CHUNK: chunk}
    if next_key is not None:
        m[ota.M_NEXT_KEY] = next_key
    try:
        return ota.check_manifest(m)
    except ota.FirmwareError as e:
        raise ReleaseError(f"the release would be refused by the boards: {e.detail}") from None


def sign(manifest: dict, key: KeyPair) -> bytes:
    signed = cose.sign1(key.private, cbor.dumps(manifest), key.id)
    if len(signed) > cbor.MAX_SIZE - 64:
        raise ReleaseError(f"the signed manifest is {len(signed)} bytes: a board takes at "
                           f"most {cbor.MAX_SIZE} per message (fewer files)")
    return signed


def write_release(out: Path, files_dir: Path, key: KeyPair, board: str, version: int,
                  abi: str | None = None, next_key: bytes | None = None,
                  chunk: int = ota.CHUNK) -> Release:
    """Sign the files already in `files_dir` (= out/files, or copied there)."""
    out.mkdir(parents=True, exist_ok=True)
    dest = out / FILES
    if files_dir.resolve() != dest.resolve():
        if dest.exists():
            shutil.rmtree(dest)
        for top in FOLDERS:  # not the root's boot file: it is never updated
            shutil.copytree(files_dir / top, dest / top, ignore=shutil.ignore_patterns(".*"))
    m = manifest_of(dest, board, version, abi or mpy_abi(), chunk=chunk, next_key=next_key)
    signed = sign(m, key)
    (out / MANIFEST).write_bytes(signed)
    return load(out)


def release(key: KeyPair, board: str, version: int, out: Path,
            next_key: bytes | None = None) -> Release:
    """Build the firmware for `board` with mpy-cross and write a signed
    release of it into `out`."""
    if board not in BOARDS:
        raise ReleaseError(f"--board must be one of {', '.join(BOARDS)}")
    try:
        profile(board)
        built = ROOT / "build" / f"release-{board}"
        build(built, board)
    except (BuildError, ProfileError) as e:
        raise ReleaseError(str(e)) from None
    return write_release(out, built, key, board, version, next_key=next_key)


def load(folder: Path) -> Release:
    """A release folder read back and checked against its own manifest."""
    try:
        signed = (folder / MANIFEST).read_bytes()
        s1 = cose.parse1(signed)
        m = ota.check_manifest(cbor.loads(s1.payload))
    except OSError as e:
        raise ReleaseError(f"{folder}: no release here ({e.strerror})") from None
    except errors.TLError as e:
        raise ReleaseError(f"{folder}/{MANIFEST}: {e}") from None
    files = []
    for path, size, digest in entries(m):
        try:
            data = (folder / FILES / path).read_bytes()
        except OSError:
            raise ReleaseError(f"{folder}: {path} is missing") from None
        if len(data) != size or hashlib.sha256(data).digest() != digest:
            raise ReleaseError(f"{folder}: {path} differs from the signed manifest")
        files.append(data)
    return Release(signed, m, files)


def entries(m: dict) -> list[tuple[str, int, bytes]]:
    """The manifest's (path, size, sha256) per file."""
    f = m[ota.M_FILES]
    return [(f[i], f[i + 1], f[i + 2]) for i in range(0, len(f), 3)]


def messages(rel: Release, domain: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of every chunk, the manifest, then the announcement
    (last: a board that sees it finds the rest already there)."""
    announce = topics.firmware(domain, rel.board)
    chunk = rel.manifest[ota.M_CHUNK]
    out = []
    for i, data in enumerate(rel.files):
        for c in range(ota.chunks(len(data), chunk)):
            out.append((ota.chunk_topic(announce, rel.rid, i, c),
                        ota.pack_chunk(rel.rid, i, c, data[c * chunk:(c + 1) * chunk])))
    out.append((ota.manifest_topic(announce, rel.rid), rel.signed))
    out.append((announce, ota.announcement(rel.rid, rel.version, cose.parse1(rel.signed).kid)))
    return out


def publish(broker_url: str, domain: str, rel: Release, login: tuple[str, str] | None = None,
            timeout: float = 60.0) -> int:
    """Put the release's chunks, then its announcement, retained on the
    broker (QoS 1, each acknowledged); returns the number of messages."""
    host, port = parse_url(broker_url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"fw-publish-{time.time_ns() % 10**9}", protocol=mqtt.MQTTv311)
    if login:
        c.username_pw_set(*login)
    c.max_inflight_messages_set(32)
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        raise ReleaseError(f"cannot reach the broker at {broker_url}: {e}") from None
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1, retain=True) for t, p in messages(rel, domain)]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise ReleaseError(f"the broker at {broker_url} did not take the release "
                                   f"within {timeout:.0f} s")
        return len(infos)
    finally:
        c.disconnect()
        c.loop_stop()
