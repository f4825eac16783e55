"""A host-side supplier's reading joins its batch only once the broker
acknowledged it (tools/supplier.Stream.reading): a commit whose root covers
a reading the buyer never got would fail the buyer's check of the batch.
Here a real mosquitto is paused (SIGSTOP) with the stream's connection up,
so the reading's PUBACK never comes within the timeout; paho's
wait_for_publish returns on its timeout without a word, and the reading used
to be counted."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.gwtest import key
from tools.keys import KeyPair
from tools.relay import Side
from tools.supplier import Stream, Supplier, SupplyError

DOMAIN = "stream-test"


@pytest.mark.mosquitto
def test_a_reading_the_broker_did_not_acknowledge_stays_out_of_the_batch(mosquitto_factory):
    broker = mosquitto_factory()
    priv, pub = key("stream-supplier")
    sup = Supplier(KeyPair(priv, pub), Side(DOMAIN, None, broker.url, pub, None), timeout=1,
                   line=lambda s: None)
    s = Stream(sup, bytes(range(16)))
    try:
        s.reading(0, 2150, -2)  # connected, acknowledged
        assert (s.pending, s.next) == (1, 1)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(SupplyError, match="reading 1 not acknowledged"):
                s.reading(1, 2151, -2)
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        assert (s.pending, s.next) == (1, 1)  # not counted: the same index goes again
    finally:
        s.close()
