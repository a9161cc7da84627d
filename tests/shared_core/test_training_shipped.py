"""The shipped checkpoints, loaded as a user would, scoring real prompts with the real MiniLM (ONNX, int8)."""

import json

import numpy as np
import pytest

from shared_core.artifacts import check_reference_quantiles
from shared_core.embeddings import PACKAGED_DIR
from shared_core.embeddings.onnx_runtime import file_sha256
from shared_core.engine import CHECKPOINTS, RoutingEngine, resolve_router, shipped_router_names
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
    "adaptive_ensemble_pro": [0.7512, 0.8254, 0.81398, 0.75273],
    "adaptive_ensemble_chat": [0.68597, 0.63424, 0.49217, 0.48879],
    "adaptive_ensemble_mm": [0.71628, 0.66579, 0.45917, 0.44376],
    "adaptive_ensemble_l3": [0.71964, 0.74171, 0.38589, 0.39766],
    "irt": [0.5473, 0.59265, 0.60373, 0.56014],
    "irt_nc": [0.54847, 0.58113, 0.5958, 0.55875],
}
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2:onnx-int8"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_configs_record_training(name):
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    training = config["training"]
    assert "MMLU train half" in training["data"] and training["seed"] == 0
    assert set(training["held_out"]) == {"mmlu_test", "gsm8k", "mt_bench"}
    assert config["embedder"]["name"] == EMBEDDER and config["embedder"]["dim"] == 384
    # The router travels with the exact embedder it was trained with: the packaged ONNX file, by hash.
    assert config["embedder"]["sha256"] == file_sha256(PACKAGED_DIR / "model.onnx")
    check_reference_quantiles(config["reference_quantiles"])
    for f in (CHECKPOINTS / name).iterdir():
        assert f.stat().st_size < 5 * 1024 * 1024, f
    # Only the router trained on AlpacaEval carries its non-commercial data licence.
    uses_alpaca = "AlpacaEval" in training["data"]
    assert uses_alpaca == (name == "irt_nc")
    if uses_alpaca:
        assert "CC BY-NC" in config["data_license"] and "non-commercial" in config["data_license"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_routers_score_real_prompts(name):
    router = load_router(CHECKPOINTS / name)
    assert router.embedder.name == EMBEDDER
    assert router.score(PROMPTS) == pytest.approx(GOLDEN[name], abs=2e-4)


def test_default_is_an_alias_of_a_shipped_router():
    aliases = json.loads((CHECKPOINTS / "aliases.json").read_text())
    assert set(aliases) == {"default"} and aliases["default"] in GOLDEN
    assert not (CHECKPOINTS / "default").exists()  # an alias, not a copy
    assert "default" in shipped_router_names()
    assert resolve_router("default") is resolve_router(aliases["default"])


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_a_shipped_router_answers_to_its_name(name):
    router = resolve_router(name)
    kind = json.loads((CHECKPOINTS / name / "config.json").read_text())["router"]
    assert (router.label, router.name) == (name, kind)
    # Loaded by path, a shipped checkpoint (which records no label) is known by its kind.
    assert load_router(CHECKPOINTS / name).label == kind


@pytest.mark.slow
def test_shipped_default_routes_real_prompts():
    target = json.loads((CHECKPOINTS / "aliases.json").read_text())["default"]
    config = json.loads((CHECKPOINTS / target / "config.json").read_text())
    engine = RoutingEngine.from_settings(strong_fraction=0.5)
    decisions = engine.decide_texts(PROMPTS)
    # Decisions name the shipped router, not its kind (several shipped routers share a kind).
    assert engine.router.name == config["router"] != target
    assert [d.router for d in decisions] == [target] * len(PROMPTS)
    assert engine.describe()["router"] == target
    scores = np.array([d.score for d in decisions])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert [d.is_strong for d in decisions] == list(scores >= engine.threshold)
    assert scores == pytest.approx(GOLDEN[target], abs=2e-4)
