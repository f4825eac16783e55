"""The FIRMWARE transaction (type 25, docs/OTA.md): its body schema, checks
and effects, registered with the ledger's tx-type registry by
gateway/plugins.py. Body {1: kind, ...}:

    1 release      {2: version, 3: board, 4: SHA-256 of the signed manifest}
                   sent by the publisher (`thingledger firmware publish`)
    2 installed    {2: version}  sent by a device once its new version confirmed
    3 rolled-back  {2: version running again, 3: version that failed}
                   sent by a device whose boot file rolled an update back

State (State.kv): F r <manifest hash> -> cbor {1: version, 2: board,
3: publisher, 4: height}; F d <device id> -> cbor {1: version running,
2: height, 3: failed version or 0}. A release is recorded once
(bad-tx known-release); a device's record is its latest report.
Events: ["firmware", kind, version]."""

from __future__ import annotations

from typing import Any

from gateway.errors import RuleError
from gateway.ledger.state import BlockInfo, DeviceRecord, Rules, StateOverlay, StateView
from gateway.ledger.txtypes import TxType
from gateway.ledger.validate import body_keys
from shared import cbor, errors
from shared import tx as txm
from shared.messages import STATUS_OK

RELEASE = 1
INSTALLED = 2
ROLLED_BACK = 3
KINDS = {RELEASE: "release", INSTALLED: "installed", ROLLED_BACK: "rolled-back"}
RELEASES = b"Fr"
DEVICES = b"Fd"
MAX_BOARD = 32
MAX_VERSION = 0x7FFFFFFF  # shared/ota.py check_manifest


def release_key(manifest_hash: bytes) -> bytes:
    return RELEASES + manifest_hash


def device_key(device_id: bytes) -> bytes:
    return DEVICES + device_id


def _version(v: object, lo: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= MAX_VERSION:
        raise errors.TxError("bad-version")


def check(t: txm.Tx) -> None:
    """Body schema (stateless); raises TxError."""
    b = t.body
    kind = b.get(1)
    if kind == RELEASE:
        body_keys(b, (1, 2, 3, 4))
        _version(b[2])
        if not isinstance(b[3], str) or not 0 < len(b[3]) <= MAX_BOARD:
            raise errors.TxError("bad-board")
        if not isinstance(b[4], bytes) or len(b[4]) != 32:
            raise errors.TxError("bad-hash")
    elif kind == INSTALLED:
        body_keys(b, (1, 2))
        _version(b[2])
    elif kind == ROLLED_BACK:
        body_keys(b, (1, 2, 3))
        _version(b[2], 0)
        _version(b[3])
    else:
        raise errors.TxError("bad-kind")


def precheck(view: StateView, t: txm.Tx, rules: Rules, sender: DeviceRecord) -> None:
    if t.body[1] == RELEASE and view.kv_get(release_key(t.body[4])) is not None:
        raise RuleError(errors.BAD_TX, "known-release")


def apply(view: StateOverlay, t: txm.Tx, rules: Rules,
          block: BlockInfo) -> tuple[int, str, list[Any]]:
    b = t.body
    if b[1] == RELEASE:
        view.kv_put(release_key(b[4]), cbor.dumps({1: b[2], 2: b[3], 3: t.sender,
                                                   4: block.height}))
    else:
        failed = b[3] if b[1] == ROLLED_BACK else 0
        view.kv_put(device_key(t.sender), cbor.dumps({1: b[2], 2: block.height, 3: failed}))
    return STATUS_OK, "", [["firmware", b[1], b[2]]]


def installed(view: StateView, device_id: bytes) -> dict[str, int] | None:
    """A device's firmware as the chain knows it (JSON-able): version running,
    height of its last report, the version that failed (0: none); None if it
    never reported (it runs what it was flashed with)."""
    raw = view.kv_get(device_key(device_id))
    if raw is None:
        return None
    r = cbor.loads(raw)
    return {"version": r[1], "height": r[2], "failed": r[3]}


def versions(view: Any) -> dict[bytes, dict[str, int]]:
    """Every device that reported its firmware -> installed() (JSON-able
    values; a dashboard shows them)."""
    return {k[len(DEVICES):]: {"version": r[1], "height": r[2], "failed": r[3]}
            for k, r in ((k, cbor.loads(v)) for k, v in view.kv_range(DEVICES))}


def releases(view: Any) -> list[dict[str, Any]]:
    """The releases recorded on chain, JSON-able (a dashboard shows them):
    board, version, manifest (SHA-256 hex), publisher (id hex), height;
    sorted by board and version."""
    out = []
    for k, v in view.kv_range(RELEASES):
        r = cbor.loads(v)
        out.append({"board": r[2], "version": r[1], "manifest": k[len(RELEASES):].hex(),
                    "publisher": r[3].hex(), "height": r[4]})
    return sorted(out, key=lambda r: (r["board"], r["version"], r["manifest"]))


def versions_json(view: Any) -> dict[str, dict[str, int]]:
    """versions() keyed by device id hex: what a dashboard shows per device."""
    return {i.hex(): info for i, info in versions(view).items()}


def firmware_text(info: dict[str, int]) -> str:
    """One cell of `thingledger devices`: "v3", "v2 (v3 rolled back)"."""
    text = "v%d" % info["version"]
    return text + (" (v%d rolled back)" % info["failed"] if info["failed"] else "")


TX_TYPES = (TxType(txm.TYPE_FIRMWARE, "firmware", check, precheck, apply),)
