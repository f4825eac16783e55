"""tools/failover.first, the one loop that tries a domain's brokers in turn
(the brokers of a tool's connection, tools/mqtt_ask.Line):
order, the broker kept, what is passed over and what is not."""

from __future__ import annotations

import pytest

from tools.failover import AllFailed, Brokers, first

A, B, C = "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2", "mqtt://127.0.0.1:3"


class Down(Exception):
    pass


def test_first_passes_over_failures_and_keeps_the_broker_that_answered() -> None:
    brokers = Brokers([A, B, C])
    tried: list[str] = []

    def attempt(url: str) -> str:
        tried.append(url)
        if url != B:
            raise Down("silent")
        return "answer from " + url

    assert first(brokers, attempt, Down) == "answer from " + B
    assert tried == [A, B] and brokers.order() == [B, C, A]
    assert list(brokers.passed_over) == [A + ": silent"]
    # the broker in use goes first even when another answered last
    tried.clear()
    assert first(brokers, attempt, Down, start=C) == "answer from " + B
    assert tried == [C, B] and brokers.passes == 2


def test_first_lets_a_refusal_through_and_names_every_failure() -> None:
    brokers = Brokers([A, B])

    def refuse(url: str) -> str:
        raise ValueError("refused by " + url)

    with pytest.raises(ValueError, match="refused by " + A):  # not asked elsewhere
        first(brokers, refuse, Down)
    assert brokers.passes == 0 and brokers.order() == [A, B]

    def down(url: str) -> str:
        raise Down("down")

    with pytest.raises(AllFailed) as e:
        first(brokers, down, Down)
    assert e.value.failed == [A + ": down", B + ": down"] and brokers.passes == 2
