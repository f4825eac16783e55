"""The amqtt plugins through which the embedded broker asks the Guard
(gateway/broker/policy.py) at CONNECT, PUBLISH, SUBSCRIBE and delivery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from gateway.broker.policy import Guard


class ChainAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: CONNECT credentials against the chain (see Guard.admit).
    Config: {"guard": Guard}. Use it with gateway.broker.embedded.GuardedBroker, which runs
    it before amqtt touches any session (plain amqtt 0.12 takes an existing
    connection with the same client id over before it looks at the verdict)."""

    @dataclass
    class Config:
        guard: Any = None

    async def authenticate(self, *, session: Any) -> bool:
        guard: Guard = self.config.guard
        will = session.will_topic if session.will_flag else None
        v = guard.admit(session.username, session.password, session.client_id, will)
        session.tl_verdict = v
        return v.ok


class ChainTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin: publish / subscribe / receive per the Guard's rules.
    Config: {"guard": Guard}."""

    @dataclass
    class Config:
        guard: Any = None

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or topic is None or action is None:
            return False
        guard: Guard = self.config.guard
        return guard.may(session.username, topic, str(action))


def amqtt_plugins(guard: Guard) -> dict[str, dict[str, Any]]:
    """The `plugins` section of an amqtt 0.12 broker config that enforces `guard`."""
    return {f"{__name__}.ChainAuthPlugin": {"guard": guard},
            f"{__name__}.ChainTopicPlugin": {"guard": guard}}
