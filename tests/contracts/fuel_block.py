"""One block of contract calls on the in-process ledger; prints what its header
commits to. Run by test_fuel_versions.py under each installed CPython with
only the standard library (no third-party package: shared/p256 verifies the
signatures where `cryptography` is absent), so the state root can be compared
across interpreter versions.

    python tests/contracts/fuel_block.py DATA_DIR
"""

import sys
from pathlib import Path

from gateway.contracts import builtin, runtime
from gateway.contracts.runtime import Context, Contract, entry
from shared import cbor
from tests.support.gwtest import key
from tests.support.mktest import Market


class Tally(Contract):
    """Constructs whose line events differ between CPython 3.11 and 3.12+
    (comprehensions inlined by PEP 709, loop back-edges, multi-line calls)."""

    NAME = "fuel-probe"
    VERSION = 1

    @entry
    def tally(self, ctx: Context, xs: list, rounds: int) -> int:
        sq = [x * x for x in ctx.iter(xs) if x % 3]
        total = sum(
            sq,
        )
        evens = {x: x // 2 for x in ctx.iter(xs) if not x % 2}
        n = 0
        while n < rounds:
            ctx.step()
            try:
                total += evens[n]
            except KeyError:
                total -= 1
            n += 1
        ctx.put("t", total)
        return total


def main(data_dir: str) -> None:
    builtin.REGISTRY.register(Tally)
    names = ["a%d" % i for i in range(4)]
    m = Market(Path(data_dir), {n: 1000 for n in names}, deploy=False,
               authority_key=key("operator")[0])
    ids = [m[n].id for n in names]
    m.run(m.admin("deploy", "oracle", "oracle", 1,
                  {"attestors": ids, "m": 3, "tolerance": 2}))
    m.run(m.admin("deploy", "probe", "fuel-probe", 1, None))
    addr = runtime.contract_address("oracle")
    probe = runtime.contract_address("probe")
    calls = []
    # fuel limits around what one attest costs, so that a count differing by
    # even one statement flips a call between done and out-of-fuel
    for i, fuel in enumerate(range(180, 420, 6)):
        who = names[i % len(names)]
        calls.append(m.call(who, "attest", i // 3, 20 + i % 5, address=addr, fuel=fuel))
    for i, fuel in enumerate(range(150, 600, 9)):
        calls.append(m.call(names[i % len(names)], "tally", list(range(i % 17)), i % 13,
                            address=probe, fuel=fuel))
    for n in names:
        calls.append(m.call(n, "attest", 1000, 7, address=addr, fuel=50_000))
    m.run(*calls)
    b = m.block
    out = {"height": b.height, "state_root": b.fields["state_root"],
           "receipts_root": b.fields["receipts_root"],
           "receipts": [[r.status, r.reason, r.events] for r in b.receipts]}
    sys.stdout.write(cbor.dumps(out).hex() + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
