"""Conversation-aware routing: route_on (shared_core.policy) and thread pins."""

from __future__ import annotations

import threading


import numpy as np
import pytest

from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.policy import ThreadPins, check_thread_id, routing_text
from shared_core.routers import Role, Router
from shared_core.settings import RoutingSettings
from shared_support import in_threads

CHAT = [("system", "Be brief."), ("user", "Prove that sqrt(2) is irrational."), ("assistant", "Assume p/q ..."),
        ("tool", "ignored"), ("user", "And the cube root of 2?")]


def test_last_user_is_the_default_and_last_turn_adds_the_previous_turn():
    assert routing_text(CHAT) == ("And the cube root of 2?", "score")
    text, reason = routing_text(CHAT, "last_turn")
    assert reason == "score"
    assert text == "Prove that sqrt(2) is irrational.\n\nAssume p/q ...\n\nAnd the cube root of 2?"


def test_last_turn_with_one_user_message_is_that_message_and_no_text_stays_no_text():
    assert routing_text([("user", "hi")], "last_turn") == ("hi", "score")
    assert routing_text([("user", "hi"), ("assistant", "yo"), ("user", "")], "last_turn") == (None, "no_text")
    with pytest.raises(ConfigError, match="route_on must be one of 'last_user', 'last_turn', got 'all'"):
        routing_text(CHAT, "all")


class Recording(Router):
    name = "recording"

    def __init__(self):
        self.seen = []

    def _score(self, prompts):
        self.seen.extend(prompts)
        return np.array([0.9 if "prove" in p.lower() else 0.1 for p in prompts])


def test_engine_routes_a_follow_up_with_its_turn():
    router = Recording()
    plain = RoutingEngine(router, 0.5)
    turn = RoutingEngine(router, 0.5, route_on="last_turn")
    assert plain.decide_one(CHAT).role is Role.WEAK  # the follow-up alone looks easy
    assert turn.decide_one(CHAT).role is Role.STRONG  # with the proof it follows, it is not
    assert RoutingSettings(router=router, threshold=0.5, route_on="last_turn").build_engine().route_on == "last_turn"


def test_pins_are_bounded_least_recently_used_first_out():
    pins = ThreadPins(3)
    for t in "abc":
        pins.pin(t, Role.WEAK)
    assert pins.get("a") is Role.WEAK  # a is now the most recent
    pins.pin("d", Role.STRONG)
    assert pins.get("b") is None and len(pins) == 3
    assert pins.pin_first("a", Role.STRONG) is Role.WEAK  # the first pin holds
    pins.pin("a", Role.STRONG)  # an escalation moves it
    assert pins.get("a") is Role.STRONG


@pytest.mark.parametrize("bad", [0, -1, True, "3"])
def test_pin_capacity_is_checked(bad):
    with pytest.raises(ConfigError, match="capacity of at least 1"):
        ThreadPins(bad)


@pytest.mark.parametrize("bad", [-1, True, "3", 2.0])
def test_pin_threads_setting_is_checked(bad):
    with pytest.raises(ConfigError, match="pin_threads must be a number of threads >= 0"):
        RoutingSettings(router="random", threshold=0.5, pin_threads=bad)


@pytest.mark.parametrize("bad", ["", 1.5, ["t"], True])
def test_thread_ids_are_strings_or_ints(bad):
    with pytest.raises(ConfigError, match="thread_id must be a non-empty string, an int or a UUID"):
        check_thread_id(bad)


def test_pins_under_concurrent_first_calls_agree_on_one_pin():
    pins = ThreadPins(1000)
    seen = []
    barrier = threading.Barrier(16)

    def work(i):
        barrier.wait()
        seen.append(pins.pin_first("thread", Role.STRONG if i % 2 else Role.WEAK))

    assert not in_threads(work, 16)
    assert len(set(seen)) == 1 and len(seen) == 16


def test_pins_keep_memory_bounded_under_many_threads():
    pins = ThreadPins(50)

    def work(offset):
        for i in range(500):
            pins.pin(f"{offset}-{i}", Role.WEAK)

    assert not in_threads(work, 8)
    assert len(pins) == 50
