"""`thingledger xdomain demo` (`make run-xdomain`): two domains and a transfer
between them, live (docs/CROSSDOMAIN.md).

In a temporary folder (or --dir): domains dom-a (alice holds 1000) and dom-b
(bob holds 500), each its own `thingledger run --no-boards` gateway on its own
embedded broker (free loopback ports); each owner creates its client of the
other (`xdomain create`); alice sends 100 to bob (`xdomain send`); a relayer
(`thingledger relay`) carries the header and the proof to dom-b and the ack
back; then a second transfer with a timeout one block ahead while no relayer
runs, and a relayer pass that refunds it. Then a cross-domain purchase
(tools/xbuy.py): dom-a's admin deploys the agreement contract, sam (a
supplier in dom-a, host side here) offers temperature readings; bob, the
buyer in dom-b, reads dom-a's retained offer directory, proves the offer
in dom-b's light client of dom-a, pays with a packet to his own id in dom-a
(a relayer dom-b -> dom-a runs meanwhile), demands, reads sam's readings
from dom-a's data topic and checks each committed batch against its root
proven in dom-b; dom-a's operator pays sam. Every step prints the command it
runs and what comes back; each wait is bounded; everything started is stopped.
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.broker.embedded import parse_url
from gateway.db.genesis_files import create_domain, write_key
from gateway.db.store import Store
from gateway.market.ledger import rules as market
from gateway.node.config import DB_FILE, KEY_FILE
from shared import p256
from shared import tx as txm
from tools.build import build, tool
from tools.keys import KeyPair, load_key
from tools.relay import open_side
from tools.submit import next_seq, submit
from tools.supplier import Supplier, SupplyError
from tools.vboard import VirtualBoard
from tools.xbuy import BuyError, CrossBuyer

STEP_TIMEOUT_S = 90.0
A, B = "dom-a", "dom-b"
SERVICE, PRICE, QUANTITY, BATCH = "temperature", 3, 4, 2
RESALE_PRICE, REX_FUNDS = 5, 100  # rex, the reseller in dom-b: its price, what it holds there


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
    for name in ("alice", "bob", "relayer", "relayer-ba", "sam", "rex"):
        priv, pub = p256.keygen()
        write_key(root / (name + ".key"), priv)
        keys[name] = pub
    dirs = {A: root / A, B: root / B}
    create_domain(dirs[A], A, {keys["alice"]: 1000, keys["sam"]: 0})
    create_domain(dirs[B], B, {keys["bob"]: 500, keys["rex"]: REX_FUNDS})
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
        _purchase(root, dirs, urls, authority, gws, say, thl)
        thl("xdomain", "purchases", "--data-dir", str(dirs[B]))
        thl("xdomain", "client", A, "--data-dir", str(dirs[B]))
        return 0
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        say("demo: %s" % e)
        return 1
    finally:
        interrupt(gws)


def interrupt(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """Ctrl-C to each process still running, killed if it has not ended
    within `timeout` s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _purchase(root: Path, dirs: dict[str, Path], urls: dict[str, str],
              authority: dict[str, bytes], procs: list[subprocess.Popen],
              say: Callable[[str], None], thl: Callable[..., str]) -> None:
    """bob in dom-b buys QUANTITY readings of sam in dom-a (see the module)."""
    a_key = load_key(dirs[A] / KEY_FILE)
    sam = load_key(root / "sam.key")

    def in_a(who: KeyPair, type_: int, body: dict) -> None:
        r = submit(urls[A], A, txm.make(who.private, who.id, type_, A, next_seq(), 0, body),
                   authority[A], timeout=STEP_TIMEOUT_S)
        if not (r.ok and r.status == 0):
            raise RuntimeError("refused in %s: %s" % (A, r.describe()))

    say("-- a cross-domain purchase: bob in %s buys sam's %s readings in %s --"
        % (B, SERVICE, A))
    for src, dst, key, extra in ((A, B, "relayer", ["--bridge"]), (B, A, "relayer-ba", [])):
        say("$ thingledger relay --from %s --to %s %s... (in the background)"
            % (src, dst, " ".join(extra) + " " if extra else ""))
        procs.append(subprocess.Popen(
            [tool("thingledger"), "relay", "--from", src, "--to", dst, "--from-dir",
             str(dirs[src]), "--to-dir", str(dirs[dst]), "--from-broker", urls[src],
             "--to-broker", urls[dst], "--key", str(root / (key + ".key")), "--interval", "0.5",
             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    in_a(a_key, txm.TYPE_CONTRACT_ADMIN, {1: "deploy", 2: market.AGREEMENT_LABEL,
                                          3: "agreement", 4: market.AGREEMENT_VERSION,
                                          5: {"operator": a_key.id, "fee_bps": 500}})
    say("%s's admin deployed the agreement contract (operator fee 5%%)" % A)
    seller = Supplier(sam, open_side(dirs[A], urls[A]), timeout=STEP_TIMEOUT_S / 3,
                      line=lambda s: say("sam: " + s))
    seller.register()
    seller.listen()
    seller.offer(SERVICE, PRICE, 1)
    say("sam offers %s at %d a reading in %s; on each MATCH he streams readings on %s's "
        "data topic and commits them in batches of %d (a host-side supplier)"
        % (SERVICE, PRICE, A, A, BATCH))
    sam_stops = threading.Event()
    threading.Thread(target=seller.serve, args=(_sam_reads, sam_stops, BATCH), daemon=True
                     ).start()
    relayer = load_key(root / "relayer.key").id
    buyer = CrossBuyer(load_key(root / "bob.key"), open_side(dirs[B], urls[B]),
                       open_side(dirs[A], urls[A]), timeout=STEP_TIMEOUT_S / 3, via=relayer,
                       line=say)
    try:
        listed = buyer.offers(SERVICE)
        say("bob reads %s's offer directory on %s's broker (bridged by the relayer): %s"
            % (A, B, ", ".join("%s at %d" % (o[1].hex()[:8], o[4]) for o in listed)))
        best = min(listed, key=lambda o: o[4])
        o = buyer.prove_offer(SERVICE, best[1])
        say("the offer of %s proven in %s's light client of %s: price %d"
            % (o.supplier.hex()[:8], B, A, o.price))
        buyer.pay(o.price * QUANTITY)
        say("bob paid %d from %s to his id in %s with a packet: %d there"
            % (o.price * QUANTITY, B, A, buyer.balance_in_market()))
        d = buyer.demand(SERVICE, o.price, QUANTITY, o.supplier)
        say("agreement %s proven in %s: supplier %s, %d readings at %d"
            % (d.agreement.id.hex()[:8], B, d.agreement.supplier.hex()[:8],
               d.agreement.quantity, d.agreement.price))
        say("bob listens on %s" % buyer.stream_topic(d))
        got = buyer.verify(d, STEP_TIMEOUT_S)
        say("bob verified %d readings: %s" % (len(got), ", ".join(
            "%d:%de%d" % r for r in got)))
        _wait_balance(dirs[A], sam.id, PRICE * QUANTITY * 95 // 100, say)
        buyer.close()
        _board(root, dirs, urls, authority, procs, say)
        _wait_balance(dirs[A], sam.id, 2 * PRICE * QUANTITY * 95 // 100, say)
    except (BuyError, SupplyError) as e:
        raise RuntimeError("purchase: %s" % e) from None
    finally:
        buyer.close()
        sam_stops.set()
        seller.stop()


def _board(root: Path, dirs: dict[str, Path], urls: dict[str, str],
           authority: dict[str, bytes], procs: list[subprocess.Popen],
           say: Callable[[str], None]) -> None:
    """A buyer board in dom-b (the market buyer firmware, unchanged) buys
    sam's readings of dom-a through rex, a reseller in dom-b
    (`thingledger xdomain resell`, tools/resell.py)."""
    b_key = load_key(dirs[B] / KEY_FILE)
    bob, rex = load_key(root / "bob.key"), load_key(root / "rex.key")
    say("-- a buyer board in %s buys sam's readings of %s through a reseller --" % (B, A))
    r = submit(urls[B], B, txm.make(b_key.private, b_key.id, txm.TYPE_CONTRACT_ADMIN, B,
                                    next_seq(), 0,
                                    {1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement",
                                     4: market.AGREEMENT_VERSION,
                                     5: {"operator": b_key.id, "fee_bps": 500}}),
               authority[B], timeout=STEP_TIMEOUT_S)
    if not (r.ok and r.status == 0):
        raise RuntimeError("refused in %s: %s" % (B, r.describe()))
    say("%s's admin deployed the agreement contract (operator fee 5%%)" % B)
    relayer = load_key(root / "relayer.key").id
    args = ["xdomain", "resell", "--data-dir", str(dirs[B]), "--broker", urls[B], "--of-dir",
            str(dirs[A]), "--of-broker", urls[A], "--service", SERVICE, "--price",
            str(RESALE_PRICE), "--max-price", str(PRICE + 1), "--via", relayer.hex(), "--key",
            str(root / "rex.key")]
    say("$ thingledger " + " ".join(args) + " (in the background)")
    rp = subprocess.Popen([tool("thingledger"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1)
    procs.append(rp)
    out: queue.Queue[str] = queue.Queue()
    _pump(rp, "rex", say, out)
    _until(out, "resell: offers ", "rex's offer in %s" % B)
    build_dir = root / "build" / "unix"
    say("compiling the firmware with mpy-cross into %s" % build_dir)
    build(build_dir, "unix")
    vb = VirtualBoard("dora", root / "boards" / "dora")
    host, port = parse_url(urls[B])
    need = {"service": SERVICE, "max_price": RESALE_PRICE, "quantity": QUANTITY,
            "policy": "cheapest", "wait_s": 600}
    vb.configure(domain=B, authority_hex=authority[B].hex(), host=host, port=port, need=need)
    say("dora, a virtual buyer board in %s (the market buyer firmware under MicroPython, "
        "heap %s), needs %s" % (B, vb.default_heap(), need))
    bp = vb.start(build_dir)
    procs.append(bp)
    board: queue.Queue[str] = queue.Queue()
    _pump(bp, "dora", say, board)
    dora = bytes.fromhex(_until(board, "online id=", "dora online").split("id=")[1][:32])
    _until(board, "receipt-verified seq=1 ", "dora registered")
    r = submit(urls[B], B, txm.make(bob.private, bob.id, txm.TYPE_TRANSFER, B, next_seq(), 0,
                                    {1: dora, 2: RESALE_PRICE * QUANTITY}),
               authority[B], timeout=STEP_TIMEOUT_S)
    say("bob gives dora %d in %s: %s" % (RESALE_PRICE * QUANTITY, B, r.describe()))
    _until(board, "demand service=%s" % SERVICE, "dora's DEMAND")
    for i in range(QUANTITY):
        _until(board, "bought agreement=", "dora's reading %d" % i)
    _until(board, "done agreement=", "dora's agreement done")
    bp.terminate()  # the board is done; the reseller stays till the end
    bp.wait(timeout=10)
    paid = 2 * (RESALE_PRICE * BATCH - RESALE_PRICE * BATCH * 500 // 10_000)
    _wait_balance(dirs[B], rex.id, REX_FUNDS - PRICE * QUANTITY + paid, say, "rex")


def _pump(p: subprocess.Popen, name: str, say: Callable[[str], None],
          out: queue.Queue[str]) -> None:
    """Show each line `p` prints as `name`'s, and queue it."""
    def run() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            say("%s: %s" % (name, line.rstrip()))
            out.put(line.rstrip())
        out.put("")
    threading.Thread(target=run, daemon=True).start()


def _until(q: queue.Queue[str], text: str, what: str) -> str:
    """The next line of `q` holding `text`; RuntimeError after STEP_TIMEOUT_S."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            break
        if text in line:
            return line
    raise RuntimeError("no %s within %.0f s" % (what, STEP_TIMEOUT_S))


def _sam_reads(index: int) -> tuple[int, int]:
    """sam's sensor: centi-degrees, scale -2."""
    return 2150 + 7 * index, -2


def _wait_balance(data_dir: Path, who: bytes, at_least: int, say: Callable[[str], None],
                  name: str = "sam") -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while _balance(data_dir, who) < at_least and time.monotonic() < deadline:
        time.sleep(0.3)
    say("%s's operator judged the batches: %s holds %d in %s"
        % (data_dir.name, name, _balance(data_dir, who), data_dir.name))
