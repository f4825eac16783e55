"""`thingledger registry demo` (tools/registry_demo.py): two registry nodes on
an embedded broker sync, and the stopped one catches up when restarted."""

from __future__ import annotations

import re

from tools.registry_demo import demo


def test_registry_demo_shows_two_nodes_syncing():
    said: list[str] = []
    assert demo(said.append), "\n".join(said[-40:])
    text = "\n".join(said)
    assert "retailer node has block 2: the nodes are in sync" in text
    m = re.search(r"restarted and caught up to block (\d+)", text)
    assert m and int(m.group(1)) == 4
    # the retailer's node logged the maker's blocks as its own head
    assert re.search(r"^  \[retailer\] head 4 ", text, re.M)
    assert "demo OK" in said[-1]
