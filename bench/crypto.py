"""ES256 (ECDSA P-256 / SHA-256) benchmark: `python -m bench.crypto [-n N]`.

Measures, in one run: shared.p256 under the MicroPython Unix port with a 64 KiB
heap (bench/mp_sign.py in a subprocess, from sources and from mpy-cross output),
shared.p256 under CPython, and the `cryptography` package (OpenSSL). Also the
heap that importing p256, one sign and one verify need on MicroPython, the same
for a variant whose comb table is a bytes literal instead of being computed at
import, and an ESP32 estimate (an assumption, stated in the output).
"""

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from tools.build import compile_stale, tool

ROOT = Path(__file__).resolve().parent.parent
MP_SCRIPT = ROOT / "bench" / "mp_sign.py"
HEAP = "64k"
TARGET_MS = 10.0  # sign on the Unix port
ESP32_FACTOR = (30, 60)  # assumed slowdown of ESP32 MicroPython vs this x86 core, mpz-heavy code
ESP32_BUDGET_MS = 1000.0
SHARED = ("__init__", "errors", "hmacsha256", "p256")
TABLE_LINE = "_TABLE = _table(_GX, _GY, _W, _D)"



def run_mp(root, arg, heap=HEAP):
    cmd = [tool("micropython"), "-X", "heapsize=" + heap, str(MP_SCRIPT), str(root), arg]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def mp_measure(root, n):
    proc = run_mp(root, str(n))
    if proc.returncode:
        raise SystemExit("micropython failed on %s:\n%s%s" % (root, proc.stdout, proc.stderr))
    return {k: float(v) for k, v in (line.split() for line in proc.stdout.splitlines())}


def min_heap_kib(root, mode, lo=4, hi=128):
    """Smallest -X heapsize (KiB) in which mp_sign.py `mode` (none, import, once) runs."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run_mp(root, mode, heap="%dk" % mid).returncode == 0:
            hi = mid
        else:
            lo = mid
    return hi


def make_tree(dst, mpy, literal):
    """A copy of shared/ in dst: sources or .mpy, comb table computed or a bytes literal."""
    (dst / "shared").mkdir(parents=True)
    for name in SHARED:
        src = (ROOT / "shared" / (name + ".py")).read_text()
        if name == "p256" and literal:
            from shared import p256

            if TABLE_LINE not in src:
                raise SystemExit("p256.py changed: %r not found" % TABLE_LINE)
            src = src.replace(TABLE_LINE, "_TABLE = %r" % bytes(p256._TABLE))
        py = dst / "shared" / (name + ".py")
        py.write_text(src)
        if mpy:
            compile_stale(py, py.with_suffix(".mpy"), py.name)
            py.unlink()
    return dst


def cpython_ms(sign, verify, n):
    sig = sign()
    if not verify(sig):
        raise SystemExit("CPython verify failed")
    out = []
    for fn in (sign, lambda: verify(sig)):
        best = None
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            ms = (time.perf_counter() - t) * 1000 / n
            best = ms if best is None else min(best, ms)
        out.append(best)
    return out


def cpython_rows(n):
    from cryptography import __version__ as crypto_version
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from shared import p256

    priv, msg = b"\x5b" * 32, b"bench message: temperature 2150 scale -2"
    pub = p256.public_key(priv)
    ours = cpython_ms(lambda: p256.sign(priv, msg), lambda s: p256.verify(pub, msg, s), n)
    key = ec.derive_private_key(int.from_bytes(priv, "big"), ec.SECP256R1())
    alg = ec.ECDSA(hashes.SHA256())

    def their_verify(sig):
        key.public_key().verify(sig, msg, alg)
        return True

    theirs = cpython_ms(lambda: key.sign(msg, alg), their_verify, n)
    py = "CPython %s" % platform.python_version()
    return [(py + ", shared.p256 (pure Python)", *ours, "-"),
            (py + ", cryptography %s (OpenSSL)" % crypto_version, *theirs, "-")]


def _verdict(sign_ms, limit):
    return "PASS (< %g ms)" % limit if sign_ms < limit else "FAIL (>= %g ms)" % limit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="calls per mean (default 50)")
    n = ap.parse_args(argv).n
    with tempfile.TemporaryDirectory() as tmp:
        variants = [
            ("source .py", ROOT),
            (".mpy", make_tree(Path(tmp) / "mpy", True, False)),
            ("literal .py", make_tree(Path(tmp) / "lit", False, True)),
            ("literal .mpy", make_tree(Path(tmp) / "litmpy", True, True)),
        ]
        mp = [(label, mp_measure(root, n), [min_heap_kib(root, m) for m in ("import", "once")])
              for label, root in variants]
        base = min_heap_kib(ROOT, "none")
    rows = []
    for label, m, _ in mp[:2]:
        rows.append(("MicroPython Unix port, heap %s, %s" % (HEAP, label), m["sign_us"] / 1000,
                     m["verify_us"] / 1000, _verdict(m["sign_us"] / 1000, TARGET_MS)))
    rows += cpython_rows(n)
    lo, hi = ESP32_FACTOR
    s, v = mp[1][1]["sign_us"] / 1000, mp[1][1]["verify_us"] / 1000
    rows.append(("ESP32 ESTIMATE (Unix port .mpy x%d..x%d)" % (lo, hi),
                 "%.0f-%.0f" % (s * lo, s * hi), "%.0f-%.0f" % (v * lo, v * hi),
                 _verdict(s * hi, ESP32_BUDGET_MS) + " estimate"))

    print("ES256 = ECDSA P-256 / SHA-256, RFC 6979 k. Time: mean of %d calls, best of 3 rounds;" % n)
    print("every number below was measured in this run.")
    print("%-50s %9s %10s  %s" % ("implementation", "sign ms", "verify ms", "verdict: sign"))
    for name, sign_ms, verify_ms, verdict in rows:
        fmt = "%-50s %9.3f %10.3f  %s" if isinstance(sign_ms, float) else "%-50s %9s %10s  %s"
        print(fmt % (name, sign_ms, verify_ms, verdict))
    print()
    print("MicroPython heap, bytes (heap %s)        " % HEAP
          + "".join("%14s" % label for label, _, _ in mp))
    for key, what in (("import_heap", "live after import p256 (+errors, hmac)"),
                      ("sign_need", "free heap needed by one sign (peak)"),
                      ("verify_need", "free heap needed by one verify (peak)")):
        print("%-42s" % what + "".join("%14d" % m[key] for _, m, _ in mp))
    print("%-42s" % "import time, ms" + "".join("%14.1f" % (m["import_us"] / 1000)
                                                  for _, m, _ in mp))
    for i, what in enumerate(("import p256", "import+sign+verify")):
        print("%-42s" % ("smallest -X heapsize: " + what) + "".join("%13dk" % k[i] for _, _, k in mp))
    print("(the same probe script with no import at all needs -X heapsize=%dk)" % base)
    print()
    print("'literal' = the comb table as a bytes literal instead of computed at import.")
    print("'free heap needed' = smallest free heap in which one call ran (ballast search, so")
    print("fragmentation counts). A .py import includes compiling the source on the device.")
    print("ESP32 line is an ESTIMATE, not a measurement: it assumes ESP32 MicroPython (240 MHz,")
    print("16-bit mpz digits) runs this mpz-heavy code %d-%dx slower than the Unix port here." % (lo, hi))


if __name__ == "__main__":
    main()
