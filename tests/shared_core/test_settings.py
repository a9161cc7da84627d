"""One settings model for every integration: its validators, and an engine that
follows the settings through assignment, model_copy, deepcopy and pickle."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.routers import Role, Router
from shared_core.settings import ROUTING_FIELDS, RoutedModel, RoutingSettings


class LengthRouter(Router):
    """Win rate grows with the prompt's length (picklable: defined at module level)."""

    name = "length"

    def _score(self, prompts):
        return np.array([min(len(p) / 100.0, 1.0) for p in prompts])


class Wrapper(RoutedModel):
    """The smallest integration: the shared settings and one field of its own."""

    label: str = "x"


# Validators: one a field ---------------------------------------------------------------
@pytest.mark.parametrize("settings, match", [
    ({"threshold": 1.5}, "threshold must be in"),
    ({"threshold": "0.5"}, "threshold must be a number"),
    ({"strong_fraction": -0.1}, "strong_fraction must be in"),
    ({"calibration_prompts": "one string"}, "calibration_prompts must be a list of strings, got a single string"),
    ({"calibration_prompts": []}, "calibration_prompts must be a non-empty list"),
    ({"calibration_prompts": ["ok", 3]}, r"calibration_prompts\[1\] must be a string"),
    ({"on_no_text": "medium"}, "on_no_text must be 'strong' or 'weak', got 'medium'"),
    ({"fallback": 1}, "fallback must be True or False"),
    ({"fallback_on": "ConnectionError"}, "fallback_on must be"),
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"router": 3}, "router must be None, a registry name"),
])
def test_each_field_is_checked_by_its_validator(settings, match):
    with pytest.raises(ConfigError, match=match):
        RoutingSettings(**settings)


def test_values_are_normalised_once():
    prompts = iter(["a", "b"])
    settings = RoutingSettings(calibration_prompts=prompts, on_no_text=Role.WEAK, fallback_on=[KeyError], timeout=3)
    assert settings.calibration_prompts == ["a", "b"]  # the iterator was read once, into a list
    assert (settings.on_no_text, settings.fallback_on, settings.timeout) == ("weak", (KeyError,), 3.0)


def test_unknown_and_several_bad_arguments_are_named_together():
    with pytest.raises(ConfigError) as info:
        Wrapper(router="random", threshold=2, thresold=0.5)
    message = str(info.value)
    assert "Wrapper got unknown keyword argument(s) 'thresold'" in message
    assert "threshold must be in [0, 1], got 2" in message
    assert isinstance(info.value, ValueError)


def test_every_shared_field_is_declared_once_on_the_settings_model():
    assert set(ROUTING_FIELDS) <= set(RoutingSettings.model_fields)
    assert set(Wrapper.model_fields) == set(RoutingSettings.model_fields) | {"label"}


# The engine follows the settings ------------------------------------------------------------
def test_engine_is_built_at_construction_and_checks_the_combination():
    wrapper = Wrapper(router=LengthRouter(), threshold=0.5)
    assert isinstance(wrapper.engine, RoutingEngine) and wrapper.engine.threshold == 0.5
    with pytest.raises(ConfigError, match="not both"):
        Wrapper(router=LengthRouter(), threshold=0.5, strong_fraction=0.5)


def test_assignment_rebuilds_the_engine_and_a_bad_value_changes_nothing():
    wrapper = Wrapper(router=LengthRouter(), threshold=0.5)
    engine = wrapper.engine
    wrapper.label = "y"  # not a routing field: the engine stays
    wrapper.fallback = True  # not an engine field: the engine stays
    assert wrapper.engine is engine
    wrapper.threshold = 0.2
    assert wrapper.engine is not engine and wrapper.engine.threshold == 0.2
    with pytest.raises(ConfigError, match="threshold must be in"):
        wrapper.threshold = -1
    with pytest.raises(ConfigError, match="needs calibration prompts"):
        wrapper.threshold = None  # a strong fraction of 0.5 on a router with no reference quantiles
    assert wrapper.threshold == 0.2 and wrapper.engine.threshold == 0.2
    wrapper.router = "random"
    assert wrapper.engine.router.name == "random"


def test_model_copy_update_rebuilds_the_copy_only():
    wrapper = Wrapper(router=LengthRouter(), threshold=0.5)
    stricter = wrapper.model_copy(update={"threshold": 0.9, "label": "z"})
    assert (stricter.engine.threshold, stricter.label) == (0.9, "z")
    assert (wrapper.engine.threshold, wrapper.label) == (0.5, "x")
    assert wrapper.model_copy(deep=True).engine.threshold == 0.5


def test_deepcopy_shares_the_router_and_pickle_rebuilds_the_engine():
    router = LengthRouter()
    wrapper = Wrapper(router=router, threshold=0.5)
    clone = copy.deepcopy(wrapper)
    assert clone.router is router and clone.engine.router is router  # read-only: shared
    clone.threshold = 0.1
    assert wrapper.engine.threshold == 0.5
    restored = pickle.loads(pickle.dumps(wrapper))
    assert restored.engine.threshold == 0.5 and restored.engine.router.name == "length"
    assert "_engine" not in wrapper.__getstate__()["__pydantic_private__"]


@pytest.mark.slow  # loads the shipped default router
def test_pickle_and_deepcopy_work_with_the_shipped_default_router():
    # Before: the engine (and with it the loaded embedder's lock) was pickled.
    wrapper = Wrapper(threshold=0.5)
    for clone in (copy.deepcopy(wrapper), pickle.loads(pickle.dumps(wrapper))):
        assert clone.router is None
        prompts = ["What is 2 + 2?", "Prove that there are infinitely many primes."]
        assert clone.engine.decide_texts(prompts) == wrapper.engine.decide_texts(prompts)


def test_attempts_follow_the_settings():
    from shared_core.routers import Decision

    wrapper = Wrapper(router=LengthRouter(), threshold=0.5, fallback=True, timeout=7, fallback_on=KeyError)
    decision = Decision(Role.WEAK, 0.1, 0.5, "length")
    attempts = wrapper._attempts(decision, lambda role: f"{role.value}-model")  # noqa: SLF001
    assert attempts.plan == ((Role.WEAK, "weak-model"), (Role.STRONG, "strong-model"))
    assert attempts.timeout == 7.0
    assert wrapper._attempts(decision, str, timeout=2).timeout == 2.0  # noqa: SLF001 - a per-call override
    wrapper.fallback = False
    assert len(wrapper._attempts(decision, str).plan) == 1  # noqa: SLF001


@pytest.mark.slow  # loads the shipped default router
def test_an_engine_pickles_its_router_by_name():
    # Before: pickling an engine with a shipped router failed on the embedder's lock.
    engine = RoutingEngine.from_settings(threshold=0.5)
    restored = pickle.loads(pickle.dumps(engine))
    assert restored.router is engine.router  # the process's cached shipped router
    assert (restored.threshold, restored.on_no_text, restored.router_spec) == (0.5, Role.STRONG, "default")
    by_object = pickle.loads(pickle.dumps(RoutingEngine(LengthRouter(), 0.3, "weak")))
    assert (by_object.router.name, by_object.threshold, by_object.router_spec) == ("length", 0.3, None)
