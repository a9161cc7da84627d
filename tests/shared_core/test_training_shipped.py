"""The shipped checkpoints, loaded as a user would, scoring real prompts with the real MiniLM."""

import json
from pathlib import Path

import numpy as np
import pytest

from shared_core.artifacts import check_reference_quantiles
from shared_core.engine import CHECKPOINTS, RoutingEngine
from shared_core.routers import load_router

PROMPTS = [
    "Prove that there are infinitely many prime numbers.",
    "Write a Python function that merges two sorted linked lists in O(n) time.",
    "hi, how are you?",
    "What is the capital of France?",
]
#: Scores recorded when scripts/train_default.py wrote the checkpoints (seed 0).
GOLDEN = {
    "mf": [0.57317, 0.61145, 0.55269, 0.55206],
    "sw_ranking": [0.92227, 0.50558, 0.66366, 0.62963],
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_configs_record_training(name):
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    training = config["training"]
    assert "MMLU train half" in training["data"] and training["seed"] == 0
    assert set(training["held_out"]) == {"mmlu_test", "gsm8k", "mt_bench"}
    assert config["embedder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2" and config["embedder"]["dim"] == 384
    check_reference_quantiles(config["reference_quantiles"])
    for f in (CHECKPOINTS / name).iterdir():
        assert f.stat().st_size < 5 * 1024 * 1024, f


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_routers_score_real_prompts(name):
    router = load_router(CHECKPOINTS / name)
    assert router.embedder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert router.score(PROMPTS) == pytest.approx(GOLDEN[name], abs=2e-4)


@pytest.mark.slow
def test_shipped_default_routes_real_prompts():
    config = json.loads((CHECKPOINTS / "default" / "config.json").read_text())
    engine = RoutingEngine.from_settings(strong_fraction=0.5)
    decisions = engine.decide_texts(PROMPTS)
    assert [d.router for d in decisions] == [config["router"]] * len(PROMPTS)
    scores = np.array([d.score for d in decisions])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert [d.is_strong for d in decisions] == list(scores >= engine.threshold)
    # The default is a copy of a shipped router: same weights, same scores.
    twin = CHECKPOINTS / config["router"]
    if Path(twin, "config.json").is_file() and config["router"] in GOLDEN:
        assert scores == pytest.approx(GOLDEN[config["router"]], abs=2e-4)
