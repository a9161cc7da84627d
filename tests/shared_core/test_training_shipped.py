"""The shipped checkpoints, loaded as a user would, scoring real prompts with the real MiniLM (ONNX, int8)."""

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
    "mf": [0.56534, 0.61437, 0.55214, 0.55808],
    "sw_ranking": [0.92735, 0.50535, 0.66146, 0.63665],
    "knn": [0.80501, 0.7615, 0.64646, 0.55054],
    "ensemble": [0.7704, 0.77675, 0.7391, 0.70619],
    "adaptive_ensemble": [0.76788, 0.78024, 0.78067, 0.77558],
}
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2:onnx-int8"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_configs_record_training(name):
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    training = config["training"]
    assert "MMLU train half" in training["data"] and training["seed"] == 0
    assert set(training["held_out"]) == {"mmlu_test", "gsm8k", "mt_bench"}
    assert config["embedder"]["name"] == EMBEDDER and config["embedder"]["dim"] == 384
    check_reference_quantiles(config["reference_quantiles"])
    for f in (CHECKPOINTS / name).iterdir():
        assert f.stat().st_size < 5 * 1024 * 1024, f


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_routers_score_real_prompts(name):
    router = load_router(CHECKPOINTS / name)
    assert router.embedder.name == EMBEDDER
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
