"""ThingLedger gateway full node.

Ledger core (pure functions + SQLite, no asyncio, no broker):

    config    GatewayConfig, TOML loading (ConfigError names the bad key)
    genesis   genesis file (TOML), authority key, genesis header, create_domain()
    state     DeviceRecord, State, StateOverlay, Rules, precheck(), apply(), state_root()
    validate  check_stateless() / check_stateful(): typed refusals with reason codes
    mempool   bounded FIFO of admitted transactions, dedupe, pending seq per sender
    ratelimit per-sender token bucket of the ingress (refusal: rate-limited, retryable)
    blocks    build_block(): execute, receipts, Merkle roots, signed header, proofs
    store     SQLite (WAL) chain store, one transaction per block; open_ledger()
    replay    verify_chain(): re-validate everything from genesis
    inspect   plain-text rendering for the `thingledger` CLI

Pipeline the service drives (gateway/node/service.py):

    led = store.open_ledger(cfg)          # genesis, key, db (block 0 on first start)
    pool = mempool.Mempool(cfg.mempool_capacity)
    # ingress, per message:
    try:
        tx = validate.check_stateless(message, cfg.domain)
        if not pool.admit(tx, led.state, led.rules):
            pass                          # same tx already pending: answered at commit
    except TLError as e:                  # e.reason is the wire reason code
        if e.reason == "replay" and (r := led.store.get_receipt(tx.id)):
            publish(r)                    # resend of a committed tx: its receipt again
        else:
            publish(messages.rejection(...e.reason, e.detail))
    # block producer, every cfg.block_interval_s or at cfg.block_max_txs:
    txs = pool.take(cfg.block_max_txs)
    b = blocks.build_block(led.head, txs, led.state, int(time.time()),
                           led.authority_priv, led.genesis.authority_id,
                           domain=cfg.domain, rules=led.rules)
    led.store.commit_block(b)             # one SQLite transaction (may run in a thread)
    led.state.apply_diff(b.diff, b.kv_diff); led.head = b
    pool.done(txs)                        # only after the state moved on
    for i, t in enumerate(b.txs): publish(rx(t.sender), b.receipt_message(i))
    for t, e in b.dropped: publish(rx(t.sender), rejection(e.reason, e.detail))
    publish(blocks topic, b.signed_header)
"""

from gateway import plugins  # noqa: E402,F401 - the feature packages' tx types, registered with the ledger
