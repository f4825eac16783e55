"""Registry verification: replay the stored chain from its genesis file.

`verify_registry(store, genesis, now) -> RegistryReport` stops at the first
problem (a gateway.db.verify.ChainError: block height, stable reason, detail):
- block 0 is exactly the header computed from `registry.toml` (and the
  stored genesis digest matches the file);
- every block: stored hash = SHA-256(header), header schema, height =
  position, prev_hash links, time not before the previous block and at most
  MAX_FUTURE_S ahead of `now`, `target` = the retarget rule's (pow.py),
  hash < target (the work), at most block_max_txs transactions;
- every tx: id = SHA-256(message), full validation with signatures against
  the state at that point, execution, stored sender/seq/type/receipt equal
  to the recomputed ones; tx_root, receipts_root, state_root recomputed;
- at the end the manufacturers, devices and attempts tables equal the
  replayed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256

from gateway import errors as codes  # the domain chain's verification codes
from gateway.errors import ChainError
from gateway.registry import chain
from gateway.registry import pow as pw
from gateway.registry.params import RegistryGenesis
from gateway.registry.store import RegistryStore
from shared import cbor, errors, header

BAD_POW = "bad-pow"
BAD_TARGET = "bad-target"
TIME_FUTURE = "time-in-future"
ATTEMPTS_MISMATCH = "attempts-mismatch"
MAX_FUTURE_S = 2 * 3600


@dataclass
class RegistryReport:
    ok: bool
    blocks: int = 0
    txs: int = 0
    manufacturers: int = 0
    devices: int = 0
    attempts: int = 0
    head_height: int | None = None
    head_hash: bytes | None = None
    head_target: int | None = None
    state_root: bytes | None = None
    error: ChainError | None = None

    def text(self) -> str:
        if self.ok:
            assert self.head_hash is not None and self.state_root is not None
            assert self.head_target is not None
            return "\n".join([
                "registry OK",
                "blocks         %d (height 0..%s)" % (self.blocks, self.head_height),
                "txs            %d" % self.txs,
                "manufacturers  %d" % self.manufacturers,
                "devices        %d" % self.devices,
                "refused dups   %d" % self.attempts,
                "head hash      %s" % self.head_hash.hex(),
                "state root     %s" % self.state_root.hex(),
                "difficulty     %.0f hashes/block" % pw.difficulty(self.head_target),
            ])
        e = self.error
        assert e is not None
        return "registry verification FAILED at height %d: %s%s\n(%d blocks verified before it)" \
            % (e.height, e.reason, " (%s)" % e.detail if e.detail else "", self.blocks)


def verify_registry(store: RegistryStore, g: RegistryGenesis, now: int) -> RegistryReport:
    """Replay and check the whole registry; never raises ChainError."""
    rep = RegistryReport(ok=False)
    try:
        state, attempts = _replay(store, g, now, rep)
        _compare(store, state, attempts, rep.head_height or 0)
    except ChainError as e:
        rep.error = e
        return rep
    rep.ok = True
    rep.state_root = state.root()
    rep.manufacturers, rep.devices, rep.attempts = len(state.mfrs), len(state.devices), \
        len(attempts)
    return rep


def _replay(store: RegistryStore, g: RegistryGenesis, now: int, rep: RegistryReport
            ) -> tuple[chain.RegistryState, list[chain.Attempt]]:
    stored = store.meta("genesis")
    if stored is not None and stored != g.digest():
        raise ChainError(0, codes.GENESIS_MISMATCH, "registry.toml differs from the one in the store")
    genesis_bytes = cbor.dumps(chain.genesis_fields(g.time, g.target))
    state = chain.RegistryState()
    attempts: list[chain.Attempt] = []
    times: list[int] = []
    prev_hash, prev_target = b"", g.target
    for blk in store.iter_blocks():
        h = len(times)
        if blk.height != h:
            raise ChainError(h, codes.MISSING_BLOCK, "next stored height is %d" % blk.height)
        hb = blk.header_bytes
        if pw.header_hash(hb) != blk.hash:
            raise ChainError(h, codes.HEADER_MISMATCH, "hash column is not SHA-256(header)")
        try:
            f = chain.decode_header(hb)
        except errors.TLError as e:
            raise ChainError(h, codes.BAD_HEADER, e.detail) from None
        if f["height"] != h or f["version"] != header.VERSION:
            raise ChainError(h, codes.BAD_HEADER, "height/version")
        if f["time"] != blk.time:
            raise ChainError(h, codes.HEADER_MISMATCH, "time column")
        try:
            rows = store.block_txs(h)
        except errors.TLError as e:
            raise ChainError(h, codes.BAD_ROW, "events: " + e.detail) from None
        if len(rows) != blk.n_txs:
            raise ChainError(h, codes.BAD_ROW, "n_txs is %d, %d rows" % (blk.n_txs, len(rows)))
        if h == 0:
            if rows or hb != genesis_bytes:
                raise ChainError(0, codes.GENESIS_MISMATCH, "block 0 is not the genesis header")
        else:
            if f["prev_hash"] != prev_hash:
                raise ChainError(h, codes.BAD_PREV_HASH)
            if f["time"] < times[-1]:
                raise ChainError(h, codes.TIME_BACKWARDS)
            if f["time"] > now + MAX_FUTURE_S:
                raise ChainError(h, TIME_FUTURE, "%d s ahead" % (f["time"] - now))
            want = pw.next_target(h, prev_target, times.__getitem__, g.retarget_blocks,
                                  g.block_time_ms, g.target)
            if f["target"] != want:
                raise ChainError(h, BAD_TARGET, "target %d, rule says %d" % (f["target"], want))
            if not pw.meets(blk.hash, f["target"]):
                raise ChainError(h, BAD_POW, "hash above target")
            if len(rows) > g.block_max_txs:
                raise ChainError(h, codes.BAD_ROW, "%d txs, at most %d" % (len(rows),
                                                                     g.block_max_txs))
            for r in rows:
                if sha256(r.message).digest() != r.id:
                    raise ChainError(h, codes.TX_ID_MISMATCH, "tx %d %s" % (r.idx, r.id.hex()))
            ex = chain.execute([r.message for r in rows], state, h)
            if ex.dropped:
                tid, e = ex.dropped[0]
                raise ChainError(h, codes.BAD_TX, "%s: %s/%s" % (tid.hex(), e.reason, e.detail))
            for r, t, rc in zip(rows, ex.txs, ex.receipts, strict=True):
                where = "tx %d %s" % (r.idx, r.id.hex())
                if (t.sender, t.seq, t.type) != (r.sender, r.seq, r.type):
                    raise ChainError(h, codes.TX_ROW_MISMATCH, where)
                if (rc.status, rc.reason, rc.events) != (r.status, r.reason, r.events):
                    raise ChainError(h, codes.RECEIPT_MISMATCH, where)
            if ex.tx_root != f["tx_root"]:
                raise ChainError(h, codes.TX_ROOT_MISMATCH)
            if ex.receipts_root != f["receipts_root"]:
                raise ChainError(h, codes.RECEIPTS_ROOT_MISMATCH)
            if ex.overlay.root() != f["state_root"]:
                raise ChainError(h, codes.STATE_ROOT_MISMATCH)
            state.apply(ex.overlay)
            attempts.extend(ex.attempts)
        times.append(f["time"])
        prev_hash, prev_target = blk.hash, f["target"]
        rep.blocks += 1
        rep.txs += len(rows)
        rep.head_height, rep.head_hash, rep.head_target = h, blk.hash, f["target"]
    if not times:
        raise ChainError(0, codes.EMPTY_CHAIN, "no genesis block in the store")
    return state, attempts


def _compare(store: RegistryStore, state: chain.RegistryState,
             attempts: list[chain.Attempt], height: int) -> None:
    for what, stored, replayed in (("manufacturer", store.manufacturers(), state.mfrs),
                                   ("device", store.devices(), state.devices)):
        if stored == replayed:
            continue
        for i in sorted(set(stored) | set(replayed)):
            if stored.get(i) != replayed.get(i):
                raise ChainError(height, codes.STATE_MISMATCH, "%s %s: stored %s, replayed %s"
                                 % (what, i.hex(), stored.get(i), replayed.get(i)))
    if store.all_attempts() != attempts:
        raise ChainError(height, ATTEMPTS_MISMATCH, "attempts table differs from the chain")
