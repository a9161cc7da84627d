"""Ladders of more than two models (shared_core.ladder), on a stand-in router and on a fitted irt router."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.ladder import Ladder, model_qualities, supports_ladder
from shared_core.routers import Role, get_router_class
from shared_core.routers.irt import IRTRouter
from shared_core.settings import RoutingSettings
from shared_support import TableRouter, in_threads


RUNGS = [("tiny", 0.8), ("mid", 0.7), ("big", None)]


def test_cheapest_rung_that_clears_its_threshold_wins_in_one_router_call():
    router = TableRouter()
    ladder = Ladder(router, RUNGS)
    decisions = ladder.decide_texts(["say hi", "explain tides", "prove it"])
    assert [(d.rung, d.model, d.role) for d in decisions] == [
        (0, "tiny", Role.WEAK), (1, "mid", Role.WEAK), (2, "big", Role.STRONG)]
    assert router.calls == 1
    assert decisions[1].score == pytest.approx(0.8, abs=1e-12) and decisions[1].threshold == 0.7
    assert decisions[2].to_dict()["qualities"] == [0.1, 0.4, 0.95]


def test_threshold_is_inclusive():
    ladder = Ladder(TableRouter(), [("tiny", 0.9), ("mid", 0.7), ("big", None)])
    assert ladder.decide_texts(["say hi"])[0].rung == 0  # 0.9 >= 0.9


def test_no_text_goes_to_on_no_text_end_of_the_ladder():
    assert Ladder(TableRouter(), RUNGS).decide([[("assistant", "hi")]])[0].rung == 2
    weak = Ladder(TableRouter(), RUNGS, on_no_text="weak").decide([[("user", "")]])[0]
    assert (weak.rung, weak.reason, weak.score) == (0, "no_text", None)


def test_attempt_order_and_escalation_targets():
    ladder = Ladder(TableRouter(), RUNGS)
    mid = ladder.decide_texts(["explain tides"])[0]
    assert ladder.attempt_order(mid, fallback=False) == [1]
    assert ladder.attempt_order(mid, fallback=True) == [1, 2, 0]
    assert ladder.escalation_targets(mid) == [2]
    assert ladder.escalation_targets(ladder.decide_texts(["say hi"])[0]) == [1, 2]


@pytest.mark.parametrize("rungs, match", [
    ([("tiny", 0.8)], "at least two"),
    ([("tiny", None), ("big", None)], "rung 0 \\('tiny'\\) needs a threshold"),
    ([("tiny", 1.5), ("big", None)], "threshold"),
    ([("tiny", 0.5), ("gpt-9", None)], "rung 1 model 'gpt-9' is not in the router's model table: tiny, mid, big"),
    ([("tiny", 0.5), ("TINY", None)], "name the same model"),
    ([("tiny", 0.5, 3), ("big", None)], "must be a \\(name, threshold\\) pair"),
])
def test_bad_rungs_fail_at_construction(rungs, match):
    with pytest.raises(ConfigError, match=match):
        Ladder(TableRouter(), rungs)


def test_a_pairwise_router_cannot_climb_a_ladder():
    random_router = get_router_class("random")()
    assert not supports_ladder(random_router)
    with pytest.raises(ConfigError, match="scores one pair of models only; a ladder needs"):
        Ladder(random_router, RUNGS)


def test_engine_and_settings_build_a_ladder_and_refuse_a_threshold_with_it():
    engine = RoutingEngine.from_settings(router=TableRouter(), ladder=[(n, t) for n, t in RUNGS])
    assert engine.decide_one([("user", "explain tides")]).rung == 1
    assert engine.describe()["ladder"][0] == {"model": "tiny", "threshold": 0.8}
    with pytest.raises(ConfigError, match="a ladder gives each rung its own threshold"):
        RoutingEngine.from_settings(router=TableRouter(), threshold=0.5, ladder=[(n, t) for n, t in RUNGS])
    with pytest.raises(ConfigError, match="ladder\\[1\\] must be a \\(model, name, threshold\\) triple"):
        RoutingSettings(router=TableRouter(), ladder=[("m", "tiny", 0.5), ("big", None)])


def test_pinned_ladder_decision_scores_nothing():
    router = TableRouter()
    decision = Ladder(router, RUNGS).pinned(1)
    assert (decision.rung, decision.reason, decision.qualities, router.calls) == (1, "pinned", (), 0)


def test_ladder_is_thread_safe_to_share():
    ladder = Ladder(TableRouter(), RUNGS)
    texts = ["say hi", "explain tides", "prove it"] * 10
    results = [None] * len(texts)

    def work(i):
        results[i] = ladder.decide_texts([texts[i]])[0].rung

    assert not in_threads(work, len(texts))
    assert results == [0, 1, 2] * 10


# A real multi-model router -----------------------------------------------------------------
HARD = [f"prove the theorem about primes number {i}" for i in range(8)]
MEDIUM = [f"explain the water cycle to a child {i}" for i in range(8)]
EASY = [f"say hi to my friend {i}" for i in range(8)]


@pytest.fixture(scope="module")
def irt():
    rows = []
    for prompts, solved in ((HARD, {"big"}), (MEDIUM, {"big", "mid"}), (EASY, {"big", "mid", "small"})):
        for p in prompts:
            rows += [(p, "exam", m, float(m in solved), "binary") for m in ("big", "mid", "small")]
    obs = pd.DataFrame(rows, columns=["prompt", "source", "model", "outcome", "kind"])
    return IRTRouter(HashEmbedder(dim=64), strong="big", weak="small", skills=2, steps=200, progress=False).fit(obs)


def test_irt_qualities_are_each_models_success_probability(irt):
    q = model_qualities(irt, HARD[:1] + EASY[:1], ["small", "mid", "big"])
    eta = irt.logits(HARD[:1] + EASY[:1], irt.embedder.embed(HARD[:1] + EASY[:1]), ["small", "mid", "big"])
    assert q == pytest.approx(1 / (1 + np.exp(-eta)), abs=1e-9)
    assert q[0, 0] < q[1, 0]  # small is likelier to do well on the easy prompt


def test_irt_ladder_sends_easy_prompts_to_the_cheapest_model(irt):
    ladder = Ladder(irt, [("small", 0.6), ("mid", 0.6), ("big", None)])
    easy = [d.rung for d in ladder.decide_texts(EASY)]
    hard = [d.rung for d in ladder.decide_texts(HARD)]
    assert easy.count(0) > len(EASY) // 2
    assert all(r > 0 for r in hard)


def test_engine_with_a_ladder_pickles_and_decides_the_same(irt):
    engine = RoutingEngine.from_settings(router=irt, ladder=[("small", 0.6), ("mid", 0.6), ("big", None)])
    clone = pickle.loads(pickle.dumps(engine))
    texts = EASY[:3] + HARD[:3]
    assert [d.rung for d in clone.decide_texts(texts)] == [d.rung for d in engine.decide_texts(texts)]
