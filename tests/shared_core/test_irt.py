"""The item-response router: fitting on toy outcomes, the scoring pair, save/load, and its recipe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.errors import ArtifactError, ConfigError, DataError
from shared_core.routers import load_router
from shared_core.routers.irt import IRTRouter, validate_observations

HARD = [f"prove the theorem about primes number {i}" for i in range(8)]
EASY = [f"say hi to my friend {i}" for i in range(8)]


def toy_observations() -> pd.DataFrame:
    """``big`` solves everything, ``small`` only easy prompts, ``mid`` in between; a judged pref source too."""
    rows = []
    for p in HARD:
        rows += [(p, "exam", "big", 1.0, "binary"), (p, "exam", "small", 0.0, "binary"), (p, "exam", "mid", 0.0, "binary")]
    for p in EASY:
        rows += [(p, "exam", "big", 1.0, "binary"), (p, "exam", "small", 1.0, "binary"), (p, "exam", "mid", 1.0, "binary")]
    df = pd.DataFrame(rows, columns=["prompt", "source", "model", "outcome", "kind"])
    pref = pd.DataFrame({"prompt": HARD[:4] + EASY[:4], "source": "judge", "model": "small",
                         "outcome": [0.0] * 4 + [0.5] * 4, "kind": "pref", "reference": "big"})
    return pd.concat([df, pref], ignore_index=True)


@pytest.fixture(scope="module")
def router():
    return IRTRouter(HashEmbedder(dim=64), strong="big", weak="small", skills=2, steps=150, progress=False).fit(
        toy_observations()
    )


def test_fit_learns_the_pair_gain(router):
    scores = router.score(HARD[:2] + EASY[:2])
    assert scores[:2].min() > scores[2:].max()
    assert router.models_ == ["big", "small", "mid"]
    assert router.training_["observations"] == {"exam": 48, "judge": 8}


def test_scoring_pair_is_configurable_and_checked(router):
    other = router.with_pair("mid", "small")
    assert (other.strong, other.weak) == ("mid", "small") and other.reference_quantiles_ is None
    assert router.strong == "big"  # the original is untouched
    with pytest.raises(ConfigError, match=r"strong model 'gpt-4o' is not in the router's model table: big, small, mid"):
        router.with_pair("gpt-4o", "small")
    with pytest.raises(ConfigError, match="same model"):
        IRTRouter(HashEmbedder(), strong="A/x", weak="x")
    with pytest.raises(ConfigError, match="weak model 'nope'"):
        IRTRouter(HashEmbedder(), strong="big", weak="nope", steps=5).fit(toy_observations())


def test_save_load_round_trip(router, tmp_path):
    router.reference_quantiles_ = np.linspace(0.4, 0.6, 101)
    path = router.save(tmp_path / "irt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_router(path)
    assert isinstance(loaded, IRTRouter) and loaded.models_ == router.models_
    prompts = HARD[:3] + EASY[:3] + ["something else entirely"]
    assert loaded.score(prompts) == pytest.approx(router.score(prompts), abs=1e-6)
    assert loaded.reference_quantiles == pytest.approx(router.reference_quantiles_)
    switched = IRTRouter.from_pretrained(path, strong="mid", weak="small")
    assert switched.reference_quantiles is None  # the quantiles belong to the saved pair
    assert switched.score(prompts) == pytest.approx(router.with_pair("mid", "small").score(prompts), abs=1e-6)
    config = json.loads((path / "config.json").read_text())
    assert config["scoring_pair"] == {"strong": "big", "weak": "small"} and config["skills"] == 2
    config["features"]["version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="prompt features"):
        load_router(path)


def test_observations_are_validated():
    good = toy_observations()
    with pytest.raises(DataError, match=r"miss column\(s\) \['kind'\]"):
        validate_observations(good.drop(columns=["kind"]))
    with pytest.raises(DataError, match="kind 'score'"):
        validate_observations(good.assign(kind="score"))
    with pytest.raises(DataError, match="outcome .1.5. must be a number in"):
        validate_observations(good.assign(outcome=1.5))
    with pytest.raises(DataError, match="need a 'reference' column"):
        validate_observations(good.drop(columns=["reference"]))
    with pytest.raises(ConfigError, match="not trained"):
        IRTRouter(HashEmbedder()).score(["x"])


# --- the recipes on a tiny data directory shaped like ../shared/data -------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_toy_data(tmp_path_factory.mktemp("irtdata"))


def write_toy_data(root):
    """A tiny data directory shaped like ../shared/data: MMLU, arena-bench (3 models), MMLU-Pro, AlpacaEval."""
    from tests.shared_core.test_new_sources import write_alpaca, write_mmlu_pro

    strong, weak = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
    mmlu = root / "routellm" / "mmlu" / "responses"
    mmlu.mkdir(parents=True)
    prompts = [f"{'hard proof' if i % 2 else 'easy fact'} question {i}" for i in range(40)]
    pd.DataFrame({"prompt": prompts, weak: [i % 2 == 0 for i in range(40)], strong: [True] * 40}).to_csv(
        mmlu / "mmlu_toy.csv", index=False)
    arena = root / "arena-bench-v1" / "model_judgment"
    arena.mkdir(parents=True)
    qs = [{"question_id": f"q{i}", "turns": [f"arena task {i}"]} for i in range(20)]
    (root / "arena-bench-v1" / "question.jsonl").write_text("\n".join(json.dumps(q) for q in qs) + "\n")
    for k, model in enumerate([strong, weak, "claude-2.1"]):
        rows = [{"question_id": q["question_id"], "model": model, "score": 9 - 3 * k + (i % 2)} for i, q in enumerate(qs)]
        (arena / f"{model.split('/')[-1]}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    write_mmlu_pro(root)
    write_alpaca(root)
    return root


def test_irt_recipes_use_their_sources_and_refuse_held_out_questions(data_dir):
    from shared_core.training.recipes import train_recipe

    router = train_recipe("irt", data_dir=data_dir, embedder=HashEmbedder(dim=32), progress=False,
                          options={"steps": 20})
    from shared_core.datasets import mmlu_split

    train_half = sum(mmlu_split(f"{'hard proof' if i % 2 else 'easy fact'} question {i}") == "train" for i in range(40))
    assert 0 < train_half < 40
    assert router.training_["observations"] == {"arena": 60, "mmlu": 2 * train_half, "mmlu_pro": 29}
    assert "AlpacaEval" not in router.training_["data"] and router.training_["data_license"].startswith("Apache")
    held = train_recipe("irt_nc", data_dir=data_dir, embedder=HashEmbedder(dim=32), progress=False,
                        options={"steps": 20}, exclude_questions={"mmlu_pro": ["70", "71"], "alpaca_eval": ["p1"]},
                        exclude_arena_questions=["q0"])
    obs = held.training_["observations"]
    assert obs["alpaca_eval"] == 5 * 2  # 5 prompts x (Mixtral + vicuna); the reference itself is no observation
    assert obs["mmlu_pro"] == 29 - 3 - 2  # question 70 has 2 graded models, 71 has 3
    assert obs["arena"] == 57
    assert held.training_["excluded_questions"] == {"alpaca_eval": 1, "arena": 1, "mmlu_pro": 2}
    assert "CC BY-NC" in held.training_["data_license"]
    assert "CC BY-NC" in held.config()["data_license"]


def test_recipe_drops_a_training_prompt_whose_text_is_held_out(data_dir):
    from shared_core.training.irt import observations
    from shared_core.training.recipes import RecipeData

    data = RecipeData(data_dir, exclude_questions={"arena": ["q3"]})
    obs, _ = observations(data, alpaca_eval=True)
    assert "arena task 3" not in set(obs["prompt"])
    # the held-out text under another source's id is dropped too
    data._cache["mmlu_pro"] = data.mmlu_pro().assign(prompt="arena task 3")
    obs, _ = observations(data, alpaca_eval=False)
    assert (obs["source"] == "mmlu_pro").sum() == 0


def test_adaptive_ensemble_pro_adds_an_mmlu_pro_bank_without_held_out_questions(data_dir):
    from shared_core.training.recipes import train_recipe

    router = train_recipe("adaptive_ensemble_pro", data_dir=data_dir, embedder=HashEmbedder(dim=32), progress=False,
                          exclude_questions={"mmlu_pro": ["72"]})
    # 10 questions, 70 has no gpt-4o grade, 72 is held out
    assert router.training_["prompts"]["mmlu_pro"] == 8
    assert "gpt-4o-2024-05-13 (standing in for the strong model)" in router.training_["data"]
    assert router.training_["excluded_questions"] == {"mmlu_pro": 1}
