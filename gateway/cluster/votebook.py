"""What a replica keeps to prove a validator's double vote (docs/CONSENSUS.md,
"Double votes filed as proofs"); no I/O: the replica feeds it.

- headers: header bytes by block hash, of the proposals this gateway saw in
  the log (applied, refused, or that lost the race), the last HEADERS of
  them (applied blocks are also found in the store by the replica);
- votes: the valid votes of the validator set seen per (height, signer),
  the last VOTES of those pairs; a signer's vote on a second hash at one
  height is handed back as a double vote;
- proof(): the two messages of a PROOF of kind "vote-equivocation"
  (gateway/trust/evidence.py), checked here as the chain will check them
  (except the set membership, which the replica checked before); a vote on
  a hash whose header this gateway does not know cannot prove two headers:
  ProofError(bad-proof, unknown-header), and nothing is filed;
- counts: what became of each double vote seen, by outcome (filed,
  unknown-header, trust-off, no-account, own-key, ...); each offence counted
  once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.cluster.sigs import HeaderSig
from gateway.trust import evidence
from shared import cose, errors, header

HEADERS = 512  # header bytes of the last proposals seen
VOTES = 4096  # (height, signer) pairs of the last votes seen
HASHES_PER_VOTER = 4  # hashes kept per (height, signer): one is honest, two prove
OFFENCES = 4096  # offences remembered (filed or not provable)
UNKNOWN_HEADER = "unknown-header"


class VoteBook:
    def __init__(self, max_headers: int = HEADERS, max_votes: int = VOTES,
                 on_count: Callable[[str], Any] | None = None) -> None:
        self.on_count = on_count  # e.g. a metric's increment, by outcome
        self.max_headers = max_headers
        self.max_votes = max_votes
        self.headers: OrderedDict[bytes, bytes] = OrderedDict()
        self.votes: OrderedDict[tuple[int, bytes], dict[bytes, bytes]] = OrderedDict()
        self.handled: set[tuple[bytes, int]] = set()  # (signer, height) filed or refused
        self.unproved: set[tuple[bytes, int]] = set()  # counted as unknown-header already
        self.counts: Counter[str] = Counter()
        # block hash -> a double vote waiting for that header (unknown-header)
        self.waiting: OrderedDict[bytes, tuple[HeaderSig, HeaderSig]] = OrderedDict()

    # ---- headers -------------------------------------------------------------------
    def keep_header(self, header_bytes: bytes) -> bytes:
        """Remember a header; its block hash."""
        h = header.block_hash(header_bytes)
        self.headers[h] = bytes(header_bytes)
        self.headers.move_to_end(h)
        while len(self.headers) > self.max_headers:
            self.headers.popitem(last=False)
        return h

    def keep_signed_header(self, signed: bytes) -> bytes | None:
        """Remember the header inside a proposal's COSE_Sign1 (its signature
        is not what a vote proof rests on); None if it is not one."""
        try:
            payload = bytes(cose.parse1(signed).payload)
            header.decode(payload)
        except (errors.TLError, ValueError, TypeError):
            return None
        return self.keep_header(payload)

    def header(self, block_hash: bytes) -> bytes | None:
        return self.headers.get(block_hash)

    # ---- votes ---------------------------------------------------------------------
    def note(self, s: HeaderSig) -> list[HeaderSig]:
        """Record a valid vote of a member; the signer's earlier votes at that
        height on other hashes (double votes), oldest first."""
        k = (s.height, s.signer)
        seen = self.votes.get(k)
        if seen is None:
            seen = self.votes[k] = {}
            while len(self.votes) > self.max_votes:
                self.votes.popitem(last=False)
        others = [HeaderSig(s.height, h, s.signer, sig) for h, sig in seen.items() if h != s.hash]
        if s.hash not in seen and len(seen) < HASHES_PER_VOTER:
            seen[s.hash] = s.signature
        return others

    def has(self, s: HeaderSig) -> bool:
        """Whether the vote `s` (its signer's, on its hash, at its height) is kept."""
        return s.hash in self.votes.get((s.height, s.signer), ())

    def is_handled(self, s: HeaderSig) -> bool:
        return (s.signer, s.height) in self.handled

    def handle(self, s: HeaderSig) -> None:
        """The offence (signer, height) of `s` is dealt with: filed, or refused
        for good (not for an unknown header, which may still come)."""
        if len(self.handled) >= OFFENCES:
            self.handled.clear()
        self.handled.add((s.signer, s.height))

    def proof(self, first: HeaderSig, second: HeaderSig,
              header_of: Callable[[bytes], bytes | None]) -> tuple[bytes, bytes]:
        """The PROOF's two vote messages (gateway/trust/evidence.py); ProofError
        (unknown-header) if a header is unknown (the double vote then waits
        for it: `unblocked`), or the error the chain would give the proof
        (e.g. different-heights: an old vote replayed under another height)."""
        ha, hb = header_of(first.hash), header_of(second.hash)
        if ha is None or hb is None:
            self.waiting[first.hash if ha is None else second.hash] = (first, second)
            while len(self.waiting) > OFFENCES:
                self.waiting.popitem(last=False)
            raise errors.ProofError(UNKNOWN_HEADER)
        a = evidence.encode_vote(first.signer, ha, first.signature)
        b = evidence.encode_vote(second.signer, hb, second.signature)
        evidence.vote_equivocation(a, b)
        return a, b

    def unblocked(self, block_hash: bytes) -> tuple[HeaderSig, HeaderSig] | None:
        """The double vote that waited for the header of `block_hash`, if any."""
        return self.waiting.pop(block_hash, None)

    def count(self, s: HeaderSig, outcome: str) -> None:
        """Count what became of the double vote `s` (unknown-header: once per offence,
        while its header may still come)."""
        if outcome != UNKNOWN_HEADER and self.waiting:  # dealt with: waits no more
            for h in [h for h, (_, x) in self.waiting.items()
                      if (x.signer, x.height) == (s.signer, s.height)]:
                del self.waiting[h]
        if outcome == UNKNOWN_HEADER:
            if (s.signer, s.height) in self.unproved:
                return
            if len(self.unproved) >= OFFENCES:
                self.unproved.clear()
            self.unproved.add((s.signer, s.height))
        self.counts[outcome] += 1
        if self.on_count is not None:
            self.on_count(outcome)
