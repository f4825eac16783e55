"""Consensus per domain, the pure part (docs/CONSENSUS.md): validator sets, the
schedule of sets in the state, the VALSET transaction, commit certificates
and equivocation evidence.

Modes, chosen in genesis (`[consensus]`, gateway/ledger/genesis.py):
- no section (chains created before consensus sections): the authority signs
  each header alone, version-1 headers, format-1 receipts;
- `authority`: a validator set of one, the authority key, threshold 1: each
  header (version 2) names the set, and its certificate is the authority's
  one vote, made by the block builder (gateway/ledger/blocks.py);
- `quorum`: n gateway keys, threshold k with 2k > n (default n // 2 + 1);
  the block is final once k members voted on its header.

The schedule of sets lives in the state tree under keys.VALSETS: canonical
CBOR [[from_height, k, [pubkey, ...]], ...], ascending; the set of height h
is the last entry whose from_height <= h. Genesis writes [[0, k, set]]. A
VALSET transaction (code 22, body {1: from height, 2: k, 3: [pubkeys]}),
signed by the domain owner (the genesis `owner`, or the authority key where
the genesis names no owner), schedules a new set from a later height: it
replaces any change still pending, and a from height at or below the height
of the block that includes it is refused (bad-tx / valset-height). The sets
of past heights stay in the schedule, so the set of any height is known (a
late vote on an old block is judged against the set of its height). A
committed proof that a member voted for two headers of one height
(gateway/trust/rules.py) takes it out of the sets from the next height on
(remove_member), as a VALSET would. Every header names the set of its height
and of the next one, so a light node sees a change one block before it takes
effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import RuleError
from gateway.ledger import keys, txtypes
from gateway.ledger.state import STATUS_OK, StateView
from gateway.ledger.validate import int_in, valid_public_key
from shared import cbor, commit, commit_gateway, errors, header, txdecode
from shared import tx as txm

AUTHORITY = "authority"
QUORUM = "quorum"
MODES = (AUTHORITY, QUORUM)
MAX_VALIDATORS = 64
MAX_DELAY = 1_000_000  # blocks between a VALSET and the height it schedules
TYPE_VALSET = txdecode.TYPE_VALSET


def majority(n: int) -> int:
    return n // 2 + 1


@dataclass(frozen=True)
class ValidatorSet:
    """Threshold and public keys (sorted by their bytes: a member's index in
    a certificate is its place here)."""

    threshold: int
    pubkeys: tuple[bytes, ...]

    @classmethod
    def of(cls, pubkeys: Iterable[bytes], threshold: int | None = None) -> ValidatorSet:
        """A checked set (RuleError bad-tx with the problem otherwise)."""
        pks = tuple(sorted(pubkeys))
        k = majority(len(pks)) if threshold is None else threshold
        problem = check_set(k, pks)
        if problem:
            raise RuleError(errors.BAD_TX, problem)
        return cls(k, pks)

    @property
    def hash(self) -> bytes:
        return commit.valset_hash(self.threshold, list(self.pubkeys))

    def encode(self) -> bytes:
        """The canonical encoding, whose SHA-256 is `hash` (shared/commit.py)."""
        return cbor.dumps(["tl-valset", self.threshold, list(self.pubkeys)])

    def index(self, pubkey: bytes) -> int | None:
        try:
            return self.pubkeys.index(pubkey)
        except ValueError:
            return None

    def ids(self) -> list[bytes]:
        return [txm.device_id(p) for p in self.pubkeys]


def check_set(k: Any, pubkeys: Sequence[Any]) -> str:
    """The problem with a set ("" if none): 1..MAX_VALIDATORS distinct valid
    keys, an integer threshold with n >= k and 2k > n (two certificates of
    one height then share an honest member)."""
    n = len(pubkeys)
    if not 1 <= n <= MAX_VALIDATORS:
        return "valset-size"
    if len(set(pubkeys)) != n or not all(valid_public_key(p) for p in pubkeys):
        return "valset-keys"
    if not int_in(k, 1, n) or 2 * k <= n:
        return "valset-threshold"
    return ""


# ---- the schedule in the state ----------------------------------------------------
Schedule = list[tuple[int, ValidatorSet]]


def encode_schedule(entries: Schedule) -> bytes:
    return cbor.dumps([[h, vs.threshold, list(vs.pubkeys)] for h, vs in entries])


def schedule(view: StateView) -> Schedule | None:
    """The chain's schedule of sets; None on a chain without a consensus section."""
    raw = view.kv_get(keys.VALSETS)
    if raw is None:
        return None
    return [(h, ValidatorSet(k, tuple(p))) for h, k, p in cbor.loads(raw)]


def set_at(entries: Schedule, height: int) -> ValidatorSet:
    """The set that finalises block `height`."""
    current = entries[0][1]
    for h, vs in entries:
        if h > height:
            break
        current = vs
    return current


def current_and_next(view: StateView, height: int) -> tuple[ValidatorSet, ValidatorSet] | None:
    s = schedule(view)
    if s is None:
        return None
    return set_at(s, height), set_at(s, height + 1)


def header_sets(fields: dict[str, Any], sets: tuple[ValidatorSet, ValidatorSet] | None) -> None:
    """Make `fields` a version-2 header naming `sets` (nothing when None)."""
    if sets is not None:
        fields["version"] = header.VERSION_SETS
        fields["validators"] = sets[0].hash
        fields["next_validators"] = sets[1].hash


# ---- VALSET ---------------------------------------------------------------------
def _schema(t: txm.Tx) -> None:
    b = t.body
    if set(b) != {1, 2, 3} or not int_in(b[1], 1, txm.MAX_AMOUNT) or not isinstance(b[3], list):
        raise errors.TxError("valset-body")
    problem = check_set(b[2], b[3])
    if problem:
        raise errors.TxError(problem)
    if b[3] != sorted(b[3]):
        raise errors.TxError("valset-order")


def domain_owner(rules: Any) -> bytes:
    """Who signs validator-set changes: the genesis owner, else the authority."""
    return rules.owner_id or rules.authority_id


def _precheck(view: Any, t: txm.Tx, rules: Any, sender: Any) -> None:
    if t.sender != domain_owner(rules):
        raise RuleError(errors.NOT_AUTHORIZED, "not-domain-owner")
    if view.kv_get(keys.VALSETS) is None:
        raise RuleError(errors.BAD_TX, "no-consensus")


def _apply(view: Any, t: txm.Tx, rules: Any, block: Any) -> tuple[int, str, list[Any]]:
    start = t.body[1]
    if start <= block.height or start > block.height + MAX_DELAY:
        raise RuleError(errors.BAD_TX, "valset-height")
    entries = schedule(view) or []
    kept = [e for e in entries if e[0] <= block.height]  # the past sets stay (set_at)
    new = ValidatorSet(t.body[2], tuple(t.body[3]))
    view.kv_put(keys.VALSETS, encode_schedule(kept + [(start, new)]))
    return STATUS_OK, "", [["valset", start, new.hash]]


# ---- a validator proved to equivocate leaves the set ---------------------------------
def threshold_without(vs: ValidatorSet, n: int) -> int:
    """k of `vs` once it has `n` members left: k stays unless k > n, then n;
    never below a majority of the n (2k > n holds: two certificates of one
    height still share a member)."""
    return max(min(vs.threshold, n), majority(n))


def without(vs: ValidatorSet, pubkey: bytes) -> ValidatorSet:
    """`vs` without `pubkey` (unchanged if it is not a member, or its only one:
    a set is never emptied, the domain would stop)."""
    if vs.index(pubkey) is None or len(vs.pubkeys) == 1:
        return vs
    rest = tuple(p for p in vs.pubkeys if p != pubkey)
    return ValidatorSet(threshold_without(vs, len(rest)), rest)


def remove_member(view: Any, pubkey: bytes, height: int) -> tuple[int, ValidatorSet] | None:
    """Take `pubkey` out of every set in force after block `height` (the block
    that holds the proof of its double vote, gateway/trust/rules.py): from
    height + 1 on, as a VALSET from the earliest height it may name, and out
    of a change still pending. Returns (from height, set) of the first set
    that changed, or None when nothing changes (not a member after `height`,
    the only one, or no consensus section)."""
    entries = schedule(view)
    if entries is None:
        return None
    start = height + 1
    past = [e for e in entries if e[0] < start]
    olds = [(start, set_at(entries, start)), *(e for e in entries if e[0] > start)]
    news = [(h, without(vs, pubkey)) for h, vs in olds]
    changed = [e for e, old in zip(news, olds, strict=True) if e[1] != old[1]]
    if not changed:
        return None
    if news[0][1] == past[-1][1]:  # still the set in force at `height`: no entry needed
        news = news[1:]
    view.kv_put(keys.VALSETS, encode_schedule(past + news))
    return changed[0]


TX_TYPES = (txtypes.TxType(TYPE_VALSET, "consensus", _schema, _precheck, _apply),)


# ---- certificates and evidence -----------------------------------------------------
def check_certificate(cert: Any, header_bytes: bytes, fields: Mapping[str, Any],
                      vs: ValidatorSet) -> None:
    """ProofError / SignatureError unless `cert` finalises this header under
    `vs` (which must be the set the header names)."""
    commit.check(cert, header.block_hash(header_bytes), fields["validators"], list(vs.pubkeys),
                 vs.threshold)


@dataclass(frozen=True)
class Vote:
    """One validator's signature on one header."""

    pubkey: bytes
    height: int
    header_bytes: bytes
    signature: bytes


@dataclass(frozen=True)
class Equivocation:
    """Two different headers of one height signed by one validator: proof
    anyone can check (check_equivocation) and file on chain."""

    pubkey: bytes
    height: int
    first: Vote
    second: Vote


def vote_valid(v: Vote) -> bool:
    try:
        commit_gateway.check_vote(v.pubkey, header.block_hash(v.header_bytes), v.signature)
        return header.decode(v.header_bytes)["height"] == v.height
    except errors.TLError:
        return False


def equivocation(a: Vote, b: Vote) -> Equivocation | None:
    """Evidence if `a` and `b` are valid votes of one validator on two
    different headers of one height; None otherwise (pure)."""
    if a.pubkey != b.pubkey or a.height != b.height or a.header_bytes == b.header_bytes:
        return None
    if not (vote_valid(a) and vote_valid(b)):
        return None
    first, second = sorted((a, b), key=lambda v: header.block_hash(v.header_bytes))
    return Equivocation(a.pubkey, a.height, first, second)


def check_equivocation(e: Equivocation) -> bool:
    return equivocation(e.first, e.second) == e


class Tally:
    """Votes gathered for one height (a gateway's view): the certificate once
    k members of `vs` voted on one header; equivocations on the way. A vote
    from outside the set, with a bad signature or for another height counts
    for nothing (returns a reason)."""

    def __init__(self, vs: ValidatorSet, height: int) -> None:
        self.vs = vs
        self.height = height
        self.by_member: dict[bytes, Vote] = {}
        self.evidence: list[Equivocation] = []

    def add(self, v: Vote) -> str:
        if self.vs.index(v.pubkey) is None:
            return "signer-outside-set"
        if v.height != self.height or not vote_valid(v):
            return "bad-vote"
        old = self.by_member.get(v.pubkey)
        if old is not None:
            e = equivocation(old, v)
            if e is not None:
                self.evidence.append(e)
                return "equivocation"
            return "duplicate"
        self.by_member[v.pubkey] = v
        return ""

    def certificate(self, header_bytes: bytes) -> list[list[Any]] | None:
        votes = {}
        for pub, v in self.by_member.items():
            if v.header_bytes == header_bytes:
                i = self.vs.index(pub)
                assert i is not None
                votes[i] = v.signature
        if len(votes) < self.vs.threshold:
            return None
        chosen = dict(sorted(votes.items())[:self.vs.threshold])
        return commit_gateway.certificate(chosen)
