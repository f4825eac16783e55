"""ThingLedger gateway full node: one package per responsibility (docs/ARCHITECTURE.md).

    ledger/     the consensus core, pure: state, validate, blocks, genesis, tx-type registry
    identity/   identity lifecycle rules, statements, node roles, access views
    contracts/  the contract VM (imports only shared/) and its ledger binding
    market/     ledger/: market consensus rules; node/: off-chain market service
    registry/   the public manufacturers' PoW chain
    db/         SQLite chain store, chain verification, genesis files, CLI rendering
    node/       the asyncio service: MQTT link, mempool, rate limit, config
    broker/     credentials, topic policy, amqtt plugins, mosquitto export, embedded broker
    errors.py   the host side's error types and their reason codes
    plugins.py  registers identity, market and contracts tx types with the ledger

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
    publish(blocks topic, b.announcement())  # header + commit certificate (docs/CONSENSUS.md)
"""

from gateway import plugins  # noqa: F401 - the feature packages' tx types, registered with the ledger
