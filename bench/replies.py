"""What sealed rejections cost (`python -m bench.replies [-n N]`).

A rejection on a device's rx topic is sealed by the domain authority
(docs/PROTOCOL.md, "Replies"): one ES256 signature per refusal on the
gateway, where a refusal can be driven by anyone who publishes on the tx
topic, and one verification on the board for a rejection about a
transaction in its outbox. Measured here, per rejection:
- the gateway: building the map alone (as before sealing), sealing it with
  the host's signer (shared/cose.py: `cryptography`, RFC 6979) and with
  shared/p256.py (the pure-Python signer, what the gateway used before);
  for scale, verifying one incoming transaction (every admitted tx costs one);
- a host client: replies_host.open_reply (seal checked);
- a board: the node's check (cose.parse1 + check1 on views) under the
  MicroPython Unix port, mean of a few (an ESP32 is tens of times slower).
Every number is measured in this run; mean of N, best of 3 rounds."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from hashlib import sha256
from pathlib import Path

from shared import cose, messages, notice, p256, reasons, replies_host
from shared import tx as txm
from tools.build import build, tool

MP_CHECK = """
import gc, sys, time
sys.path.insert(0, {root!r})
from shared import cose, messages
pub = bytes.fromhex({pub!r})
msg = bytes.fromhex({msg!r})
best = None
for _ in range(3):
    gc.collect()
    t = time.ticks_us()
    for _ in range({n}):
        s1 = cose.parse1(msg, False)
        m = messages.parse(s1.payload, False)
        cose.check1(pub, s1)
    us = time.ticks_diff(time.ticks_us(), t) / {n}
    best = us if best is None or us < best else best
print(int(best))
"""


def per_call_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replies")
    ap.add_argument("-n", type=int, default=500, help="calls per round (host)")
    args = ap.parse_args(argv)
    n = args.n
    priv = sha256(b"authority").digest()
    pub = p256.public_key(priv)
    aid = txm.device_id(pub)
    tx_id = sha256(b"a refused transaction").digest()

    def body() -> bytes:
        return messages.rejection(tx_id, 4711, reasons.MEMPOOL_FULL, "mempool-full", 1000)

    sealed = notice.seal(priv, aid, body())
    dev_priv = sha256(b"device").digest()
    dev_pub = p256.public_key(dev_priv)
    reading = txm.make(dev_priv, txm.device_id(dev_pub), txm.TYPE_READING, "demo", 1, 0,
                       {1: 2150, 2: -2})
    t = txm.decode(reading)

    def p256_seal() -> bytes:
        b = body()
        prot = cose.protected_header(aid)
        return p256.sign_digest(priv, cose.sig_digest(prot, b))

    rows = [
        ("gateway: build the rejection map (unsealed)", per_call_us(body, n)),
        (f"gateway: build + seal ({cose.BACKEND}, as now)",
         per_call_us(lambda: notice.seal(priv, aid, body()), n)),
        ("gateway: build + seal with shared/p256.py", per_call_us(p256_seal, max(20, n // 20))),
        ("gateway: verify one incoming tx (for scale)", per_call_us(lambda: t.verify(dev_pub), n)),
        ("host client: open_reply (seal checked)",
         per_call_us(lambda: replies_host.open_reply(sealed, pub), n)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fw"
        build(root, "unix")
        script = Path(tmp) / "check.py"
        script.write_text(MP_CHECK.format(root=str(root), pub=pub.hex(), msg=sealed.hex(), n=5))
        p = subprocess.run([tool("micropython"), "-X", "heapsize=64k", str(script)],
                           capture_output=True, text=True, timeout=300)
        board = float(p.stdout.split()[-1]) if p.returncode == 0 else None
    print(f"sealed rejection: {len(sealed)} B (the map alone: {len(body())} B)")
    print(f"{'per rejection':<52} {'us':>9}")
    for name, us in rows:
        print(f"{name:<52} {us:>9.1f}")
    if board is None:
        print("board check under MicroPython failed:\n" + p.stdout + p.stderr)
        return 1
    print(f"{'board: parse + check the seal (MicroPython Unix port)':<52} {board:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
