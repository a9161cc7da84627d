"""The knn and ensemble routers and their training recipes (fast: HashEmbedder, tiny data)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.errors import ArtifactError, ConfigError, DataError
from shared_core.routers import get_router_class, load_router
from shared_core.routers.ensemble import FEATURE_NAMES, EnsembleRouter, fit_weighted_ridge, prompt_features
from shared_core.routers.knn import KNNRouter, neighbour_mean
from shared_core.training.knn import correctness_labels, difficulty_labels, fit_logistic_1d

HARD = ["prove the theorem about primes", "solve the integral of x squared", "derive the proof by induction"]
EASY = ["say hello to my friend", "write a short greeting", "say hi politely"]


def labelled(source: str = "demo") -> pd.DataFrame:
    return pd.DataFrame({"prompt": HARD + EASY, "label": [1.0] * 3 + [0.0] * 3, "source": source})


@pytest.mark.parametrize("cls", [KNNRouter, EnsembleRouter])
def test_scores_follow_labels_and_round_trip(cls, tmp_path):
    router = cls(HashEmbedder(32), banks={"demo": {"k": 2}}).fit(labelled())
    scores = router.score(HARD + EASY)
    assert scores[:3].min() > scores[3:].max()
    assert ((scores >= 0) & (scores <= 1)).all()
    router.save(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["router"] == cls.name and config["embedder"]["name"] == "hash-32-0"
    again = load_router(tmp_path / "r")
    assert type(again) is cls
    np.testing.assert_allclose(again.score(HARD + EASY), scores, rtol=0, atol=1e-6)


def test_registered_names():
    assert get_router_class("knn") is KNNRouter
    assert get_router_class("ensemble") is EnsembleRouter


def test_neighbour_mean_golden():
    sims = np.array([[0.9, 0.1, 0.5]])
    labels = np.array([1.0, 0.0, 0.0])
    # k=2 keeps sims 0.9 and 0.5: weights 1 and exp(-0.4/0.2); prior 0.5 with weight 1
    w = np.exp(-2.0)
    expected = (1.0 + 0.5) / (1.0 + w + 1.0)
    got = neighbour_mean(sims, labels, k=2, temperature=0.2, prior=0.5, prior_weight=1.0)
    assert got[0] == pytest.approx(expected, abs=1e-12)


def test_gate_prefers_the_closer_bank():
    data = pd.concat([labelled("near"), pd.DataFrame({"prompt": ["zzz qqq", "qqq zzz www"], "label": [0.0, 0.0],
                                                      "source": "far"})])
    router = KNNRouter(HashEmbedder(64), banks={"near": {"k": 2}, "far": {"k": 2}}, gate_k=1).fit(data)
    _, gates = router.bank_scores(router.embedder.embed(HARD))
    assert router.sources_ == ["far", "near"]
    assert (gates[:, 1] > 0.9).all()


def test_bad_settings_raise_early():
    with pytest.raises(ConfigError, match="k must be an integer"):
        KNNRouter(HashEmbedder(), banks={"mmlu": {"k": 0}})
    with pytest.raises(ConfigError, match="unknown"):
        KNNRouter(HashEmbedder(), banks={"mmlu": {"neighbours": 3}})
    with pytest.raises(ConfigError, match="head_weight"):
        EnsembleRouter(HashEmbedder(), head_weight=1.5)
    with pytest.raises(ConfigError, match="not trained"):
        KNNRouter(HashEmbedder()).score(["hi"])
    with pytest.raises(DataError, match="label"):
        KNNRouter(HashEmbedder()).fit(labelled().assign(label=2.0))


def test_wrong_embedder_on_load(tmp_path):
    KNNRouter(HashEmbedder(32), banks={"demo": {"k": 2}}).fit(labelled()).save(tmp_path / "r")
    with pytest.raises(ArtifactError, match="does not match"):
        load_router(tmp_path / "r", embedder=HashEmbedder(32, seed=1))


def test_prompt_features_shape_and_values():
    f = prompt_features(["What is 12 + 30?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:", "hi"])
    assert f.shape == (2, len(FEATURE_NAMES))
    named = dict(zip(FEATURE_NAMES, f[0]))
    assert named["multiple_choice"] == 1.0 and f[1, FEATURE_NAMES.index("multiple_choice")] == 0.0
    assert named["log_numbers"] == pytest.approx(np.log1p(6), abs=1e-12)


def test_weighted_ridge_matches_closed_form():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((50, 3)), rng.uniform(0.5, 2.0, 50)
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3
    coef, b = fit_weighted_ridge(x, y, w, alpha=1e-9)
    np.testing.assert_allclose(coef, [1.0, -2.0, 0.5], atol=1e-6)
    assert b == pytest.approx(0.3, abs=1e-6)


def test_correctness_labels():
    df = pd.DataFrame({"prompt": ["a", "b", "c"], "gpt-4-1106-preview": [True, False, True],
                       "mistralai/Mixtral-8x7B-Instruct-v0.1": [False, True, True]})
    np.testing.assert_allclose(correctness_labels(df, "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"),
                               [1.0, 0.0, 0.5])


def test_difficulty_labels_rise_with_difficulty():
    rng = np.random.default_rng(0)
    n = 60
    mean = rng.uniform(2, 9, n)
    strong = np.clip(mean + 1, 1, 10)
    # hard prompts (low mean grade): strong wins; easy ones: a tie
    df = pd.DataFrame({"prompt": [f"p{i}" for i in range(n)], "strong": strong,
                       "weak": np.where(mean < 5, strong - 3, strong).clip(1, 10), "other": mean})
    labels, fit = difficulty_labels(df, "strong", "weak")
    assert fit["slope"] > 0
    assert labels[np.argmin(mean)] > labels[np.argmax(mean)]
    with pytest.raises(DataError, match="at least"):
        difficulty_labels(df.head(5), "strong", "weak")


def test_logistic_1d_recovers_parameters():
    x = np.linspace(-3, 3, 2001)
    y = 1 / (1 + np.exp(-(0.5 + 2.0 * x)))
    a, b = fit_logistic_1d(x, y, ridge=1e-9)
    assert a == pytest.approx(0.5, abs=1e-4) and b == pytest.approx(2.0, abs=1e-4)


# Recipes on a tiny data directory in the layout of ../shared/data --------------------
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    mmlu = root / "routellm" / "mmlu" / "responses"
    mmlu.mkdir(parents=True)
    prompts = [f"{'hard proof' if i % 2 else 'easy fact'} question {i}" for i in range(80)]
    pd.DataFrame({"prompt": prompts, WEAK: [i % 2 == 0 for i in range(80)], STRONG: [True] * 80}).to_csv(
        mmlu / "mmlu_toy.csv", index=False)
    arena = root / "arena-bench-v1" / "model_judgment"
    arena.mkdir(parents=True)
    questions = [{"question_id": f"q{i}", "turns": [f"{'hard proof' if i % 2 else 'easy chat'} task {i}"]}
                 for i in range(30)]
    (root / "arena-bench-v1" / "question.jsonl").write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    for model, grade in ((STRONG, lambda i: 9), (WEAK, lambda i: 3 if i % 2 else 9), ("claude-2.1", lambda i: 2 if i % 2 else 8)):
        rows = [{"question_id": f"q{i}", "model": model, "score": grade(i)} for i in range(30)]
        (arena / f"{model.split('/')[-1]}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.mark.parametrize("name, cls", [("knn", KNNRouter), ("ensemble", EnsembleRouter)])
def test_recipe_trains_on_allowed_data(data_dir, name, cls):
    from shared_core.training.recipes import train_recipe

    router = train_recipe(name, data_dir=data_dir, embedder=HashEmbedder(32), progress=False,
                          exclude_arena_questions=["q0", "q1"])
    assert isinstance(router, cls)
    assert router.sources_ == ["arena", "mmlu"]
    n_train = sum(hashlib.sha256(f"{'hard proof' if i % 2 else 'easy fact'} question {i}".encode()).hexdigest()[0]
                  in "89abcdef" for i in range(80))
    assert router.training_["prompts"] == {"arena": 28, "mmlu": n_train}
    assert router.training_["excluded_arena_questions"] == 2
    assert router.training_["arena_difficulty_calibration"]["slope"] > 0  # harder prompts: strong wins more
    hard, easy = router.score(["hard proof task 99", "easy chat task 98"])
    assert hard > easy


def test_recipe_options_reach_the_router(data_dir):
    from shared_core.training.recipes import train_recipe

    router = train_recipe("ensemble", data_dir=data_dir, embedder=HashEmbedder(32), progress=False,
                          options={"head_weight": 0.2})
    assert router.head_weight == 0.2
    small = train_recipe("knn", data_dir=data_dir, embedder=HashEmbedder(32), progress=False,
                         exclude_arena_questions=[f"q{i}" for i in range(15)])
    assert small.sources_ == ["mmlu"] and "arena_skipped" in small.training_
