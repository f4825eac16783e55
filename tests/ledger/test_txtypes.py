"""The ledger's tx-type registry (gateway/ledger/txtypes.py) covers exactly the
wire protocol's TYPE_* codes: every code of shared/tx.py and shared/txdecode.py
is run either by the domain chain (core, identity, market, contracts) or by the
public registry chain, never both, and nothing else is registered."""

from gateway.ledger import txtypes
from gateway.registry import chain as registry_chain
from shared import tx, txdecode


def _wire_codes() -> set[int]:
    codes = set()
    for mod in (tx, txdecode):
        codes |= {v for k, v in vars(mod).items() if k.startswith("TYPE_") and isinstance(v, int)}
    return codes


def test_registry_covers_exactly_the_wire_types() -> None:
    domain = set(txtypes.codes())
    public = set(registry_chain.REGISTRY_TYPES)
    assert not domain & public
    assert domain | public == _wire_codes()


def test_each_feature_registers_its_own_types() -> None:
    assert txtypes.codes("ledger") == {tx.TYPE_REGISTER, tx.TYPE_READING, txdecode.TYPE_TRANSFER}
    assert txtypes.codes("identity") == set(range(txdecode.TYPE_CLAIM, txdecode.TYPE_NODE_ASSIGN + 1))
    assert txtypes.codes("market") == {txdecode.TYPE_OFFER, txdecode.TYPE_WITHDRAW,
                                       txdecode.TYPE_DEMAND, txdecode.TYPE_CLOSE}
    assert txtypes.codes("contracts") == {txdecode.TYPE_CONTRACT_CALL,
                                          txdecode.TYPE_CONTRACT_ADMIN}
    assert txtypes.codes("trust") == {txdecode.TYPE_PROOF, txdecode.TYPE_REPORT}
    assert txtypes.codes("firmware") == {txdecode.TYPE_FIRMWARE}
    assert txtypes.codes("xdomain") == {txdecode.TYPE_CLIENT_CREATE, txdecode.TYPE_CLIENT_UPDATE,
                                        txdecode.TYPE_SEND, txdecode.TYPE_RELAY,
                                        txdecode.TYPE_XPURCHASE}
    for code in txtypes.codes():
        entry = txtypes.lookup(code)
        assert entry is not None and entry.code == code
        assert (entry.apply is None) == (entry.owner == "ledger")


def test_registering_a_code_twice_differently_is_refused() -> None:
    entry = txtypes.lookup(tx.TYPE_REGISTER)
    assert entry is not None
    txtypes.register(entry)  # the same definition again: harmless
    other = txtypes.TxType(entry.code, "elsewhere", entry.schema)
    try:
        txtypes.register(other)
    except ValueError:
        pass
    else:
        raise AssertionError("a second definition of a code was accepted")
    assert txtypes.lookup(tx.TYPE_REGISTER) == entry


def test_every_wire_type_has_one_name() -> None:
    """shared/txnames.py names each TYPE_* code once (log lines, CLI output
    and metric labels use it), and an unknown code is not printed bare."""
    from shared import txnames

    assert set(txnames.NAMES) == _wire_codes()
    assert len(set(txnames.NAMES.values())) == len(txnames.NAMES)
    assert all(not n.isdigit() for n in txnames.NAMES.values())
    assert txnames.CODES[txnames.name(txdecode.TYPE_CONTRACT_CALL)] == txdecode.TYPE_CONTRACT_CALL
    assert txnames.name(99) == "unknown-type-99"
