import numpy as np
import pytest

from shared_core import ConfigError, RoutingEngine, parse_model_string
from shared_core.engine import resolve_router, threshold_for_fraction
from shared_core.routers import RandomRouter, Role, Router, get_router_class


class FixedRouter(Router):
    """Scores from a lookup table, and counts its calls."""

    name = "fixed"

    def __init__(self, table, quantiles=None):
        self.table = table
        self.calls = 0
        if quantiles is not None:
            self.reference_quantiles_ = np.asarray(quantiles)

    def _score(self, prompts):
        self.calls += 1
        return np.array([self.table[p] for p in prompts])


def test_parse_model_string():
    assert parse_model_string("router-mf-0.11593") == ("mf", pytest.approx(0.11593))
    assert parse_model_string("router-sw_ranking-0.5") == ("sw_ranking", 0.5)
    for bad in ["mf-0.1", "router-mf", "router-mf-abc", "router-mf-1.5"]:
        with pytest.raises(ConfigError, match="router|threshold"):
            parse_model_string(bad)


def test_threshold_semantics_score_equal_threshold_is_strong():
    router = FixedRouter({"a": 0.5, "b": 0.49999, "c": 0.9})
    engine = RoutingEngine(router, 0.5)
    roles = [d.role for d in engine.decide_texts(["a", "b", "c"])]
    assert roles == [Role.STRONG, Role.WEAK, Role.STRONG]


def test_decide_scores_all_conversations_in_one_router_call():
    router = FixedRouter({"q1": 0.2, "q2": 0.8})
    engine = RoutingEngine(router, 0.5)
    decisions = engine.decide([[("user", "q1")], [("system", "s")], [("user", "q2")]])
    assert router.calls == 1
    assert [d.role for d in decisions] == [Role.WEAK, Role.STRONG, Role.STRONG]
    assert decisions[1].score is None and decisions[1].reason == "no_user_message"
    assert decisions[2].to_dict() == {
        "role": "strong", "score": 0.8, "threshold": 0.5, "router": "fixed", "reason": "score",
    }


def test_on_no_text_weak():
    engine = RoutingEngine(FixedRouter({}), 0.5, on_no_text="weak")
    assert engine.decide_one([("user", "")]).role is Role.WEAK
    with pytest.raises(ConfigError, match="on_no_text"):
        RoutingEngine(FixedRouter({}), 0.5, on_no_text="maybe")


def test_from_settings_model_string_and_conflicts():
    engine = RoutingEngine.from_settings(router="router-random-0.3")
    assert isinstance(engine.router, RandomRouter) and engine.threshold == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="already carries threshold"):
        RoutingEngine.from_settings(router="router-random-0.3", threshold=0.2)
    with pytest.raises(ConfigError, match="not both"):
        RoutingEngine.from_settings(router="random", threshold=0.2, strong_fraction=0.3)


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), "0.5", True])
def test_threshold_outside_unit_interval_rejected(bad):
    with pytest.raises(ConfigError, match="threshold"):
        RoutingEngine.from_settings(router="random", threshold=bad)


def test_strong_fraction_from_prompts_and_reference_quantiles():
    table = {f"p{i}": i / 10 for i in range(10)}
    router = FixedRouter(table)
    thr = threshold_for_fraction(router, 0.2, list(table))
    assert thr == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="reference score quantiles"):
        threshold_for_fraction(router, 0.2)
    router_q = FixedRouter(table, quantiles=np.linspace(0, 1, 101))
    engine = RoutingEngine.from_settings(router=router_q, strong_fraction=0.25)
    assert engine.threshold == pytest.approx(0.75)


def test_strong_fraction_zero_is_never_and_one_is_always():
    # Scores 0.0 and 1.0 exactly, and reference quantiles that cover neither end.
    table = {"low": 0.0, "mid": 0.5, "high": 1.0}
    with_quantiles = FixedRouter(table, quantiles=np.linspace(0.3, 0.7, 101))
    for router, prompts in ((with_quantiles, None), (FixedRouter(table), None), (FixedRouter(table), ["mid"])):
        never = RoutingEngine(router, threshold_for_fraction(router, 0.0, prompts))
        always = RoutingEngine(router, threshold_for_fraction(router, 1.0, prompts))
        assert [d.role for d in never.decide_texts(list(table))] == [Role.WEAK] * 3
        assert [d.role for d in always.decide_texts(list(table))] == [Role.STRONG] * 3
    engine = RoutingEngine.from_settings(router=with_quantiles, strong_fraction=0)
    assert not any(d.is_strong for d in engine.decide_texts(list(table)))
    # The ends need no scores, but what is passed is still checked.
    with pytest.raises(ConfigError, match="single string"):
        threshold_for_fraction(FixedRouter(table), 1.0, "one string")


def test_unknown_router_names_the_value_and_choices():
    with pytest.raises(ConfigError, match=r"unknown router 'nope'.*random"):
        get_router_class("nope")
    assert get_router_class("bert").name == "bert"  # RouteLLM's fine-tuned routers are registered now
    assert get_router_class("causal_llm").name == "causal_llm"
    with pytest.raises(ConfigError, match="router must be"):
        resolve_router(42)


def test_empty_prompt_list_rejected():
    with pytest.raises(ConfigError, match="empty"):
        RandomRouter().score([])
    with pytest.raises(ConfigError, match="single string"):
        RandomRouter().score("a prompt")


def test_random_router_is_seeded_and_batch_independent():
    r = RandomRouter(seed=3)
    a = r.score(["x", "y", "z"])
    assert np.array_equal(a[[1]], r.score(["y"]))
    assert not np.array_equal(a, RandomRouter(seed=4).score(["x", "y", "z"]))
    assert ((a >= 0) & (a <= 1)).all()


def test_missing_artifact_directory_is_clear(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_router(str(tmp_path / "nothing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_router(str(tmp_path / "broken"))
