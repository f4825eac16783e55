"""The market modules keep their own copies of a slot's indices and roles
(firmware/market.py's `_A`, `_T`, ..., `_SUPPLY`, `_BUY`, `_BUYING`):
micropython.const inlines a name only within its module, and importing the
numbers from firmware/market.py would keep them as names in its globals on
every market board. Each copy must give a name the number firmware/market.py
gives it, or the passes read another slot field than the notice wrote
(MicroPython only; the sources are read from the tree's root)."""

SPELLER = "firmware/market.py"
COPIES = ("firmware/supply.py", "firmware/buy.py", "firmware/bought.py", "firmware/notices.py",
          "firmware/matched.py", "firmware/reading.py")


def consts(path):
    """{name: value} of the module's `_NAME = const(N)` lines."""
    out = {}
    with open(path) as f:
        for line in f:
            name, eq, rest = line.partition(" = const(")
            if eq and name.startswith("_") and " " not in name:
                out[name] = int(rest.partition(")")[0])
    return out


def test_every_copy_of_a_slot_index_agrees_with_the_market_module():
    market = consts(SPELLER)
    assert "_A" in market and "_BUYING" in market, market  # the speller was read
    for path in COPIES:
        copy = consts(path)
        shared = [n for n in copy if n in market]
        assert "_R" in shared, (path, copy)  # every copy reads a slot's role
        for n in shared:
            assert copy[n] == market[n], (path, n, copy[n], market[n])


# the kinds of the jobs each per-call module hands firmware/market.py's run():
# the result comes back in one `out` that each module tells its own by kind
JOBS = {"firmware/reading.py": ("_JOB",), "firmware/supply.py": ("_COMMITTED", "_OFFERED"),
        "firmware/buy.py": ("_REPORTED", "_DEMANDED"), "firmware/bought.py": ("_CHECKED",),
        "firmware/sealed.py": ("_SEALED",)}


def test_no_two_market_modules_share_a_job_kind():
    kinds = []
    for path, names in JOBS.items():
        c = consts(path)
        for n in names:
            assert n in c, (path, n)  # the module still names that kind
            kinds.append(c[n])
    assert len(set(kinds)) == len(kinds), kinds
