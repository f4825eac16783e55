"""`thingledger xdomain demo` (`make run-xdomain`): two domains and a transfer
between them, live (docs/CROSSDOMAIN.md).

In a temporary folder (or --dir): domains dom-a (alice holds 1000) and dom-b
(bob holds 500), each its own `thingledger run --no-boards` gateway on its own
embedded broker (free loopback ports); each owner creates its client of the
other (`xdomain create`); alice sends 100 to bob (`xdomain send`); a relayer
(`thingledger relay`) carries the header and the proof to dom-b and the ack
back; then a second transfer with a timeout one block ahead while no relayer
runs, and a relayer pass that refunds it. Every step prints the command it
runs and what comes back; each wait is bounded; everything started is stopped.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from gateway.db.genesis_files import create_domain, write_key
from gateway.db.store import Store
from gateway.node.config import DB_FILE, KEY_FILE
from shared import p256
from shared import tx as txm
from tools.build import tool
from tools.keys import load_key
from tools.submit import next_seq, submit

STEP_TIMEOUT_S = 90.0
A, B = "dom-a", "dom-b"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _balance(data_dir: Path, who: bytes) -> int:
    with Store(data_dir / DB_FILE, readonly=True) as s:
        rec = dict(s.devices()).get(who)
    return 0 if rec is None else rec.balance


def _height(data_dir: Path) -> int:
    with Store(data_dir / DB_FILE, readonly=True) as s:
        h = s.head()
    return 0 if h is None else h.height


def run(folder: Path | None = None, say: Callable[[str], None] = print) -> int:
    with tempfile.TemporaryDirectory(prefix="tl-xdomain-") as tmp:
        root = Path(folder) if folder else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return _run(root, say)


def _run(root: Path, say: Callable[[str], None]) -> int:
    keys = {}
    for name in ("alice", "bob", "relayer"):
        priv, pub = p256.keygen()
        write_key(root / (name + ".key"), priv)
        keys[name] = pub
    dirs = {A: root / A, B: root / B}
    create_domain(dirs[A], A, {keys["alice"]: 1000})
    create_domain(dirs[B], B, {keys["bob"]: 500})
    urls = {d: "mqtt://127.0.0.1:%d" % _free_port() for d in (A, B)}
    alice, bob = txm.device_id(keys["alice"]), txm.device_id(keys["bob"])
    bob_key = load_key(root / "bob.key")
    authority = {d: load_key(dirs[d] / KEY_FILE).public for d in (A, B)}
    operator = txm.device_id(authority[B])
    gws: list[subprocess.Popen] = []

    def thl(*args: str) -> str:
        say("$ thingledger " + " ".join(args))
        p = subprocess.run([tool("thingledger"), *args], capture_output=True, text=True,
                           timeout=STEP_TIMEOUT_S)
        out = (p.stdout + p.stderr).strip()
        for line in out.splitlines():
            say("  " + line)
        if p.returncode:
            raise RuntimeError("step failed (exit %d)" % p.returncode)
        return out

    def relay(*extra: str) -> None:
        thl("relay", "--from", A, "--to", B, "--from-dir", str(dirs[A]), "--to-dir",
            str(dirs[B]), "--from-broker", urls[A], "--to-broker", urls[B],
            "--key", str(root / "relayer.key"), "--interval", "0.5", *extra)

    try:
        for d in (A, B):
            p = subprocess.Popen([tool("thingledger"), "run", "--no-boards", "--no-http",
                                  "--quiet", "--data-dir", str(dirs[d]), "--domain", d,
                                  "--listen", urls[d], "--block-interval", "0.3"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            gws.append(p)
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            while line and "chain " + d not in line:
                line = p.stdout.readline().strip()
            if not line:
                raise RuntimeError("the gateway of %s did not start" % d)
            say("%s gateway on %s: %s" % (d, urls[d], line))
        for at, of in ((B, A), (A, B)):
            thl("xdomain", "create", "--data-dir", str(dirs[at]), "--broker", urls[at],
                "--of-dir", str(dirs[of]), "--key", str(dirs[at] / KEY_FILE))
        thl("xdomain", "send", "--data-dir", str(dirs[A]), "--broker", urls[A], "--to", B,
            "--recipient", bob.hex(), "--amount", "100", "--timeout-s", "600",
            "--key", str(root / "alice.key"))
        say("alice %d in %s, bob %d in %s (100 escrowed in %s)"
            % (_balance(dirs[A], alice), A, _balance(dirs[B], bob), B, A))
        relay("--seconds", "4")
        thl("xdomain", "packets", "--data-dir", str(dirs[B]))
        say("alice %d in %s, bob %d in %s" % (_balance(dirs[A], alice), A,
                                              _balance(dirs[B], bob), B))
        deadline = _height(dirs[B]) + 1
        thl("xdomain", "send", "--data-dir", str(dirs[A]), "--broker", urls[A], "--to", B,
            "--recipient", bob.hex(), "--amount", "50", "--timeout-height", str(deadline),
            "--key", str(root / "alice.key"))
        say("no relayer runs; %s moves past height %d" % (B, deadline))
        while _height(dirs[B]) < deadline:  # bob pays 1 to B's operator: a block in B
            r = submit(urls[B], B, txm.make(bob_key.private, bob, txm.TYPE_TRANSFER, B,
                                            next_seq(), 0, {1: operator, 2: 1}),
                       authority[B], timeout=STEP_TIMEOUT_S)
            say("bob pays 1 in %s: %s" % (B, r.describe()))
        relay("--once")
        thl("xdomain", "packets", "--data-dir", str(dirs[A]))
        say("alice %d in %s (refunded), bob %d in %s" % (_balance(dirs[A], alice), A,
                                                          _balance(dirs[B], bob), B))
        thl("xdomain", "client", A, "--data-dir", str(dirs[B]))
        return 0
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        say("demo: %s" % e)
        return 1
    finally:
        for p in gws:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
