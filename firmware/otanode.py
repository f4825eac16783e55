"""What the node does about firmware updates (docs/OTA.md), loaded by
Node._ota for one call and dropped after it, so the loop keeps no heap for it:

- offer: a release announced on tl/<domain>/fw/<board> ([rid, version,
  signer id], shared/ota.py). If it names a pinned key (ota/keys) as its
  signer, a version above every one tried here, and this board has not
  handled it (ota/seen; a retained one given up as unreachable: ota/later),
  its rid goes to ota/offer and the board resets into the updater
  (firmware/ota.py), which fetches the signed manifest and checks everything
  on a fresh heap. Anything else is
  logged `ota-ignored reason=...` and changes nothing. The node keeps only
  the latest announcement and looks at it once per OFFER_GAP_MS, and not for
  ota_hold_s after the updater refused one (ota/hold): a flood is coalesced
  (each one replaced unseen is logged `ota-ignored reason=flood`), and forged
  announcements cost the board at most one reset per hold.
- due, called by a step (never in the MQTT callback, where a receipt check
  leaves the heap at its lowest): after the first verified receipt of an
  unconfirmed version, confirm it in ota/state (confirm), and at the next
  step report it on chain (report); an unconfirmed version without a
  verified receipt in time resets, and the boot file (firmware/otaboot.py)
  counts the boots and rolls back.
- report: FIRMWARE txs, installed (ota/report) or rolled-back (ota/failed).
"""
import time
from hashlib import sha256

from micropython import const

from firmware import flash
from shared import cbor, errors

TYPE_FIRMWARE = const(25)  # shared/txdecode.py TYPE_FIRMWARE
INSTALLED = const(2)  # gateway/firmware/rules.py
ROLLED_BACK = const(3)
OFFER_GAP_MS = const(2000)
_OTA_VERIFIED = const(-1)  # firmware/node.py _OTA_VERIFIED: Node.unconfirmed
_OTA_CONFIRMED = const(-2)


def offer(node, msg, retained):
    try:
        _offer(node, msg, retained)
    except errors.TLError as e:  # forged, unknown key, bad CBOR
        node.log("ota-ignored reason=%s detail=%s" % (e.reason, e.detail))


def _offer(node, msg, retained):
    if not msg:  # an empty retained message (a release withdrawn), or one too long
        return
    now = time.ticks_ms()
    h = flash.read("ota/hold")
    if h:  # the updater refused one: look at none for that many seconds
        flash.remove("ota/hold")
        node.fw_next = time.ticks_add(now, int(h) * 1000)
        node.fw_msg = (msg, retained)  # looked at once the hold ends
        return
    node.fw_next = time.ticks_add(now, OFFER_GAP_MS)
    a = cbor.loads(msg)  # [rid, version, signer id] (shared/ota_host.py announcement)
    if not (isinstance(a, list) and len(a) == 3 and isinstance(a[0], bytes) and len(a[0]) == 8
            and isinstance(a[1], int) and isinstance(a[2], bytes)):
        raise errors.DecodeError("bad-announcement")
    rid, v = a[0], a[1]
    s = flash.read("ota/seen") or b""
    if retained:  # given up for now (unreachable): only a new publish retries it
        s += flash.read("ota/later") or b""
    for i in range(0, len(s), 8):
        if s[i:i + 8] == rid:
            return  # installed, tried or refused before: quietly ignored
    st = (flash.read("ota/state") or b"0").split()
    if v <= max(int(flash.read("ota/floor") or b"0"), int(st[0])):
        node.log("ota-ignored reason=downgrade version=%d" % v)
        return
    keys = flash.read("ota/keys") or b""
    for i in range(0, len(keys) - 32, 33):
        if sha256(keys[i:i + 33]).digest()[:16] == a[2]:
            flash.write("ota/offer", rid)
            node.log("ota-offer rid=%s version=%d: resetting into the updater" % (rid.hex(), v))
            node.board.reset()
            return
    raise errors.SignatureError("unknown-key")


def confirm(node):
    # the report goes out from the next step (report below)
    st = (flash.read("ota/state") or b"0 -").split()
    flash.write("ota/state", st[0] + b" " + st[1] + b" c 0")
    flash.write("ota/report", st[0])
    node.unconfirmed = _OTA_CONFIRMED
    node.log("ota-confirmed version=%s" % st[0].decode())


def due(node):
    u = node.unconfirmed
    if u == _OTA_CONFIRMED:
        report(node)
        return
    if u == _OTA_VERIFIED:  # a receipt verified on this version
        confirm(node)
        return
    v = (flash.read("ota/state") or b"0").split()[0].decode()
    node.log("ota-unconfirmed version=%s: resetting" % v)
    node.board.reset()


def report(node):
    """FIRMWARE txs for what the last boots did: an installed version
    confirmed (ota/report), an update rolled back (ota/failed)."""
    node.unconfirmed = None
    v = flash.read("ota/report")
    if v and v.isdigit():
        node.submit(TYPE_FIRMWARE, {1: INSTALLED, 2: int(v)})
    flash.remove("ota/report")
    f = (flash.read("ota/failed") or b"").split()
    if len(f) == 2 and f[0].isdigit():
        node.log("ota-rolled-back failed=%s running=%s" % (f[0].decode(), f[1].decode()))
        node.submit(TYPE_FIRMWARE, {1: ROLLED_BACK, 2: int(f[1]) if f[1].isdigit() else 0,
                                    3: int(f[0])})
    flash.remove("ota/failed")
