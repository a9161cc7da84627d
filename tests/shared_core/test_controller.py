"""Threshold controllers: the share target, the budget cap, saved state, concurrency, the engine."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared_core.controller import (
    BUDGET_EXHAUSTED, BudgetController, ShareController, controller_from_state,
)
from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.routers import Role, Router
from shared_core.settings import RoutingSettings


def scores(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.6, 0.05, n), 0, 1)  # concentrated, like a real router's


def run(controller, seq, start=0.5):
    return [controller.decide(float(s), start) for s in seq]


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_share_controller_holds_the_target_over_the_window(target):
    seq = scores(4000)
    controls = run(ShareController(target), seq)
    strong = np.array([c.role is Role.STRONG for c in controls], float)
    window = np.convolve(strong, np.ones(500), "valid") / 500
    assert np.abs(window[1000:] - target).max() <= 0.03
    assert strong[1000:].mean() == pytest.approx(target, abs=0.01)


def test_the_threshold_moves_by_at_most_max_step_and_starts_from_the_engine():
    controls = run(ShareController(0.2, max_step=0.004, min_scores=10, window=100), scores(600), start=0.3)
    thresholds = np.array([c.threshold for c in controls])
    assert thresholds[:10].tolist() == [0.3] * 10  # min_scores: the engine's threshold until then
    assert np.abs(np.diff(thresholds)).max() <= 0.004 + 1e-12
    assert thresholds[-1] > 0.6  # it went up to the score quantile


def test_same_sequence_same_thresholds():
    seq = scores(1500, seed=3)
    a = [c.threshold for c in run(ShareController(0.3), seq)]
    b = [c.threshold for c in run(ShareController(0.3), seq)]
    assert a == b


def test_state_round_trip_mid_stream_gives_identical_later_thresholds():
    seq = scores(2000, seed=5)
    original = ShareController(0.4, initial_threshold=0.55)
    run(original, seq[:1234])
    state = json.loads(json.dumps(original.to_state()))  # a plain dict, through JSON
    restored = ShareController.from_state(state)
    assert restored.to_state() == original.to_state()
    later_a = [c.threshold for c in run(original, seq[1234:])]
    later_b = [c.threshold for c in run(restored, seq[1234:])]
    assert later_a == later_b and len(set(later_a)) > 10
    again = pickle.loads(pickle.dumps(original))
    assert [c.threshold for c in run(again, seq[:50])] == [c.threshold for c in run(original, seq[:50])]


def test_no_score_follows_the_default_and_is_not_observed():
    c = ShareController(0.5, window=10, min_scores=2)
    control = c.decide(None, 0.4, Role.WEAK, "no_text")
    assert (control.role, control.threshold, control.reason) == (Role.WEAK, 0.4, "no_text")
    assert c.to_state()["observed"] == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.5}, "strong_fraction must be in \\[0, 1\\], got 1.5"),
    ({"target": 0.5, "window": 1}, "window must be an integer >= 2, got 1"),
    ({"target": 0.5, "max_step": 0}, "max_step must be > 0.0"),
    ({"target": 0.5, "gain": -1}, "gain must be >= 0.0"),
    ({"target": 0.5, "window": 20}, "min_scores \\(50\\) must be <= window \\(20\\)"),
    ({"target": 0.5, "initial_threshold": 2}, "threshold must be in \\[0, 1\\]"),
])
def test_bad_share_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ShareController(**kwargs)


def test_bad_states():
    with pytest.raises(ConfigError, match="'kind' in"):
        controller_from_state({"kind": "other"})
    state = ShareController(0.5).to_state()
    del state["gain"]
    with pytest.raises(ConfigError, match="missing 'gain'"):
        controller_from_state(state)
    with pytest.raises(ConfigError, match="not a ShareController"):
        ShareController.from_state(BudgetController(1.0).to_state())


def test_threads_and_tasks_observe_every_decision_once():
    c = ShareController(0.5, window=200)
    seq = scores(1600)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda chunk: run(c, chunk), np.array_split(seq, 16)))
    state = c.to_state()
    assert state["observed"] == 1600 and len(state["strong"]) == 200
    assert sum(state["strong"]) / 200 == pytest.approx(0.5, abs=0.05)

    async def main():
        await asyncio.gather(*(asyncio.to_thread(run, c, chunk) for chunk in np.array_split(seq, 8)))

    asyncio.run(main())
    assert c.to_state()["observed"] == 3200


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_sends_weak_once_spent_and_resets_each_period():
    clock = Clock()
    budget = BudgetController(1.0, period=60, reserve=0.3, clock=clock)
    roles = []
    for _ in range(5):
        control = budget.decide(0.9, 0.5)
        roles.append((control.role, control.reason))
        if control.role is Role.STRONG:
            budget.charge(0.3)
    assert roles == [(Role.STRONG, "score")] * 3 + [(Role.WEAK, BUDGET_EXHAUSTED)] * 2
    assert budget.spent == pytest.approx(0.9, abs=1e-12)
    assert budget.decide(0.1, 0.5).reason == "score"  # a weak decision is a weak decision
    assert budget.decide(None, 0.5, Role.STRONG, "no_text").reason == BUDGET_EXHAUSTED
    clock.now = 60.0  # next period
    assert budget.spent == 0.0
    assert budget.decide(0.9, 0.5).role is Role.STRONG


def test_budget_reserves_calls_in_flight():
    budget = BudgetController(1.0, reserve=0.4, clock=lambda: 0.0)
    first, second, third = (budget.decide(0.9, 0.5) for _ in range(3))
    assert (first.role, second.role, third.role) == (Role.STRONG, Role.STRONG, Role.WEAK)
    assert budget.remaining == pytest.approx(0.2, abs=1e-12)


def test_release_frees_a_reservation_and_an_unknown_cost_spends_the_period():
    clock = Clock()
    budget = BudgetController(1.0, period=60, reserve=0.4, clock=clock)
    assert [budget.decide(0.9, 0.5).role for _ in range(3)] == [Role.STRONG, Role.STRONG, Role.WEAK]
    budget.release()  # one of the two strong calls failed: its reservation is free, nothing charged
    assert budget.spent == 0.0 and budget.remaining == pytest.approx(0.6, abs=1e-12)
    assert budget.decide(0.9, 0.5).role is Role.STRONG
    budget.charge_unknown()  # a strong answer without usage: the period counts as spent
    assert budget.spent > 1.0 and budget.remaining < 0.0
    control = budget.decide(0.9, 0.5)
    assert (control.role, control.reason) == (Role.WEAK, BUDGET_EXHAUSTED)
    assert json.loads(json.dumps(budget.to_state()))["spent"] == budget.spent  # still a finite, JSON-ready number
    clock.now = 60.0  # next period: strong again
    assert budget.decide(0.9, 0.5).role is Role.STRONG
    zero = BudgetController(0.0, clock=lambda: 0.0)
    zero.charge_unknown()
    assert zero.decide(0.9, 0.5).reason == BUDGET_EXHAUSTED  # over a zero cap too


def test_budget_without_reserve_stops_at_the_cap_and_a_zero_budget_admits_nothing():
    budget = BudgetController(1.0, reserve=0.0, clock=lambda: 0.0)
    assert budget.decide(0.9, 0.5).role is Role.STRONG
    budget.charge(1.0)  # exactly the cap: no room for another strong call
    assert budget.decide(0.9, 0.5).reason == BUDGET_EXHAUSTED
    zero = BudgetController(0.0, clock=lambda: 0.0)
    assert zero.decide(0.9, 0.5).reason == BUDGET_EXHAUSTED
    assert zero.decide(0.1, 0.5) == zero.decide(0.1, 0.5) and zero.decide(0.1, 0.5).reason == "score"


def test_budget_with_an_inner_share_controller_and_its_state():
    clock = Clock()
    budget = BudgetController(5.0, period=10, inner=ShareController(0.5, window=20, min_scores=5), clock=clock)
    seq = scores(30)
    for s in seq[:15]:
        if budget.decide(float(s), 0.5).role is Role.STRONG:
            budget.charge(0.25)
    state = json.loads(json.dumps(budget.to_state()))
    restored = BudgetController.from_state(state, clock=clock)
    a = [(c.role, c.threshold, c.reason) for c in run(budget, seq[15:])]
    b = [(c.role, c.threshold, c.reason) for c in run(restored, seq[15:])]
    assert a == b
    assert copy.deepcopy(budget).to_state() == budget.to_state()


def test_budget_threads_never_admit_past_the_cap():
    budget = BudgetController(10.0, reserve=1.0, clock=lambda: 0.0)

    def one(_):
        if budget.decide(0.9, 0.5).role is Role.STRONG:
            budget.charge(1.0)
            return 1
        return 0

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(one, range(200))) == 10
    assert budget.spent == pytest.approx(10.0, abs=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": -1}, "budget must be >= 0.0"), ({"budget": 1, "period": 0}, "period must be > 0.0"),
    ({"budget": 1, "inner": BudgetController(1)}, "inner must be a ShareController"),
    ({"budget": 1, "clock": 3}, "clock must be a function"),
])
def test_bad_budget_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BudgetController(**kwargs)


# Through the engine -----------------------------------------------------------------------
class ListRouter(Router):
    """Scores from a fixed table (the number in the prompt), so tests know every score."""

    name = "list"

    def _score(self, prompts):
        return np.array([float(p.split()[-1]) for p in prompts])


def test_engine_asks_the_controller_and_a_batch_observes_in_order():
    seq = [f"q {s:.4f}" for s in scores(300, seed=7)]
    batched = RoutingEngine(ListRouter(), 0.5, controller=ShareController(0.3, window=50, min_scores=10))
    one_by_one = RoutingEngine(ListRouter(), 0.5, controller=ShareController(0.3, window=50, min_scores=10))
    a = batched.decide_texts(seq)
    b = [one_by_one.decide_texts([t])[0] for t in seq]
    assert a == b
    assert len({d.threshold for d in a}) > 10
    assert batched.controller.to_state() == one_by_one.controller.to_state()
    no_text = batched.decide([[("assistant", "hi")]])[0]
    assert (no_text.role, no_text.score, no_text.reason) == (Role.STRONG, None, "no_user_message")


def test_engine_records_budget_exhaustion_on_the_decision():
    engine = RoutingEngine(ListRouter(), 0.5, controller=BudgetController(0.0, reserve=0.01, clock=lambda: 0.0))
    decision = engine.decide_texts(["q 0.9"])[0]
    assert (decision.role, decision.reason, decision.score) == (Role.WEAK, BUDGET_EXHAUSTED, 0.9)


def test_settings_take_a_controller_and_refuse_anything_else():
    controller = ShareController(0.5)
    settings = RoutingSettings(router="random", threshold=0.4, controller=controller)
    assert settings.build_engine().controller is controller
    with pytest.raises(ConfigError, match="controller must be a ShareController, a BudgetController or None, got str"):
        RoutingSettings(router="random", controller="share")
    engine = pickle.loads(pickle.dumps(settings.build_engine()))
    assert engine.controller.to_state() == controller.to_state()


def test_a_preview_decides_as_the_controller_would_and_changes_nothing():
    share = ShareController(0.3, window=20, min_scores=5)
    budget = BudgetController(1.0, reserve=0.3, inner=share, clock=lambda: 0.0)
    engine = RoutingEngine(ListRouter(), 0.5, controller=budget)
    engine.decide_texts([f"q {s:.4f}" for s in scores(12)])  # the share controller has moved its threshold
    before = (budget.to_state(), budget.remaining)
    previews = [engine.decide_texts(["q 0.95"], observe=False)[0] for _ in range(10)]
    assert (budget.to_state(), budget.remaining) == before  # nothing observed, nothing reserved
    decided = engine.decide_texts(["q 0.95"])[0]
    assert {(p.role, p.threshold, p.reason) for p in previews} == {(decided.role, decided.threshold, decided.reason)}
    spent = RoutingEngine(ListRouter(), 0.5, controller=BudgetController(0.0, clock=lambda: 0.0))
    preview = spent.decide([[("user", "q 0.9")]], observe=False)[0]
    assert (preview.role, preview.reason) == (Role.WEAK, BUDGET_EXHAUSTED)


def test_a_skipped_invalid_batch_item_is_not_observed():
    engine = RoutingEngine(ListRouter(), 0.5, controller=ShareController(0.5, window=10, min_scores=2))
    decisions = engine.decide_texts(["q 0.9", "bad \ud800 0.5", "q 0.2"], skip_invalid=True)
    assert decisions[1] is None and [d.score for d in (decisions[0], decisions[2])] == [0.9, 0.2]
    assert engine.controller.to_state()["observed"] == 2


@pytest.mark.slow
def test_the_shipped_default_router_under_a_share_controller():
    """The real router and embedder: 300 varied prompts, the last window near the target."""
    topics = ["the French revolution", "quantum tunnelling", "a haiku about rain", "sorting a list in Python",
              "the derivative of x^3", "a polite email declining a meeting", "the capital of Peru",
              "proof that sqrt(2) is irrational", "photosynthesis", "a SQL join"]
    verbs = ["Explain", "Summarise", "Write", "Prove or refute a claim about", "Give three facts on"]
    prompts = [f"{verbs[i % 5]} {topics[(i * 7) % 10]} (case {i})." for i in range(300)]
    engine = RoutingEngine.from_settings(router=None, strong_fraction=0.3,
                                         controller=ShareController(0.3, window=100, score_window=50))
    decisions = engine.decide_texts(prompts[:150]) + [engine.decide_texts([p])[0] for p in prompts[150:]]
    strong = np.array([d.role is Role.STRONG for d in decisions], float)
    assert strong[-100:].mean() == pytest.approx(0.3, abs=0.05)
    assert engine.controller.to_state()["observed"] == 300


def _simulation():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "simulate_controller.py"
    spec = importlib.util.spec_from_file_location("simulate_controller", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulation_measures():
    sim = _simulation()
    assert sim.windowed_share(np.array([1, 0, 0, 1, 1], float), 2).tolist() == [0.5, 0.0, 0.5, 1.0]
    sizes = {"mmlu": 4, "gsm8k": 3, "mt-bench": 1, "arena-bench": 2}
    orders = sim.orders(sizes, seed=0)
    assert sorted(orders["shuffled"].tolist()) == list(range(10)) == sorted(orders["drifting"].tolist())
    assert set(orders["drifting"][:3].tolist()) == {7, 8, 9}  # chat first: arena-bench and MT-Bench
    assert set(orders["drifting"][3:6].tolist()) == {4, 5, 6} and orders["drifting"].tolist() == \
        sim.orders(sizes, seed=0)["drifting"].tolist()
    gain = np.array([1.0, 1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    bench_of = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3])
    ix = np.arange(10)
    assert sim.gap_recovered(np.ones(10), ix, gain, bench_of) == pytest.approx(1.0, abs=1e-12)
    half = np.array([0, 0, 1, 0, 1, 0, 0, 1, 1, 0], float)  # mmlu 2/4, gsm8k 1/3, mt 1/1, arena 1/2
    assert sim.gap_recovered(half, ix, gain, bench_of) == pytest.approx((0.5 + 1 / 3 + 1 + 0.5) / 4, abs=1e-12)


def test_controlled_decisions_can_take_feedback():
    engine = RoutingEngine(ListRouter(), 0.5, controller=ShareController(0.5, window=10, min_scores=2))
    decision = engine.decide_texts(["q 0.7"])[0]
    assert engine.recent.get(decision.id) is not None


def test_a_left_strong_answer_is_charged_at_the_ledgers_prices_and_frees_its_reservations():
    from shared_core.controller import Reservations
    from shared_core.ledger import Ledger
    from shared_core.routers import Role

    budget = BudgetController(1.0, reserve=0.1, clock=lambda: 0.0)
    decision = type("D", (), {"role": Role.STRONG, "reason": "score", "threshold": 0.5})()
    assert budget.decide(0.9, 0.5).role is Role.STRONG
    spend = Reservations(budget, decision)
    assert budget.charge_left("big", (100, 10)) is None  # no prices yet: nothing charged, still held
    assert budget.remaining == pytest.approx(0.9, abs=1e-12)
    Ledger({"big": (10.0, 30.0), "small": (1.0, 1.0)}, strong_model="big", budget=budget)  # gives its prices
    assert spend.leave("big", (100, 10)) == pytest.approx((100 * 10.0 + 10 * 30.0) / 1e6, abs=1e-15)
    assert budget.spent == pytest.approx(0.0013, abs=1e-15)
    assert budget.remaining == pytest.approx(1.0 - 0.0013, abs=1e-12)  # its reservation is gone
    assert spend.leave("big", (100, 10)) is None  # nothing held any more: charged once
    with pytest.raises(ConfigError, match="PriceTable"):
        budget.price_with({"big": (1, 1)})


@pytest.mark.parametrize("model, tokens", [("big", None), ("nosuch", (100, 10))])
def test_a_left_strong_answer_without_a_bound_or_a_price_costs_the_reserve_or_the_period(model, tokens):
    from shared_core.ledger import Ledger

    for reserve, spent in ((0.1, 0.1), (0.0, None)):
        budget = BudgetController(1.0, reserve=reserve, clock=lambda: 0.0)
        Ledger({"big": (10.0, 30.0)}, strong_model="big", budget=budget)
        budget.decide(0.9, 0.5)
        charged = budget.charge_left(model, tokens)
        if spent is None:  # no reserve: an unknown cost ends the period
            assert charged == float("inf") and budget.spent >= 1.0 and budget.decide(0.9, 0.5).role.value == "weak"
        else:
            assert charged == spent and budget.spent == spent and budget.remaining == pytest.approx(0.9, abs=1e-12)
