"""The lane broker calls middleware hooks exactly as Dramatiq does, skipping only the base no-ops."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.middleware import SkipMessage

from actors.broker.lanes import LaneBroker


class Recorder(dramatiq.Middleware):
    def __init__(self, name: str, calls: list[str], *, fail: bool = False) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.calls.append(f"before {self.name}")
        if self.fail:
            raise RuntimeError("boom")

    def after_process_message(self, broker: dramatiq.Broker, message: Any, **kwargs: Any) -> None:
        self.calls.append(f"after {self.name}")
        if self.fail:
            raise RuntimeError("boom")


class Skipper(dramatiq.Middleware):
    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        raise SkipMessage("skip")


def lane_broker(*middleware: dramatiq.Middleware) -> LaneBroker:
    client = redis.Redis(host="127.0.0.1", port=1)  # never connected: hooks only
    return LaneBroker(client=client, middleware=list(middleware), namespace="hooks-test")


def test_hooks_run_in_dramatiq_order_and_failures_are_logged_not_raised() -> None:
    calls: list[str] = []
    broker = lane_broker(Recorder("a", calls), dramatiq.Middleware(), Recorder("b", calls, fail=True))

    broker.emit_before("process_message", object())
    broker.emit_after("process_message", object(), result=None)

    assert calls == ["before a", "before b", "after b", "after a"]


def test_a_middleware_error_in_a_before_hook_propagates() -> None:
    broker = lane_broker(Skipper())

    with pytest.raises(SkipMessage):
        broker.emit_before("process_message", object())


def test_middleware_added_later_is_called_too() -> None:
    calls: list[str] = []
    broker = lane_broker(Recorder("a", calls))
    broker.emit_before("process_message", object())

    broker.add_middleware(Recorder("late", calls))
    broker.emit_before("process_message", object())

    assert calls == ["before a", "before a", "before late"]
