"""Run every benchmark in turn (`make bench`); exit 1 if any missed its target."""

import sys

from bench import (
    chain_queries,
    crypto,
    dual_heap,
    firmware,
    gateway,
    market,
    market_heap,
    nats_log,
    ota,
    receipt_heap,
    registry_net,
    replies,
    startup,
    state_tree,
    trust,
    verifier,
    web_rss,
)


def main() -> int:
    failed = 0
    for name, run in (("crypto", crypto.main), ("firmware", firmware.main),
                      ("gateway", gateway.main), ("market", market.main),
                      ("replies", replies.main), ("dual_heap", dual_heap.main),
                      ("startup", startup.main), ("web_rss", web_rss.main),
                      ("nats_log", nats_log.main), ("trust", trust.main),
                      ("state_tree", state_tree.main),
                      ("registry_net", registry_net.main), ("ota", ota.main),
                      ("verifier", verifier.main), ("receipt_heap", receipt_heap.main),
                      ("chain_queries", chain_queries.main),
                      ("market_heap", market_heap.main)):
        print(f"== bench.{name}")
        rc = run() if name in ("firmware", "ota", "receipt_heap", "market_heap") else run([])
        failed += bool(rc)
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
