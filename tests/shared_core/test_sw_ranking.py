"""Similarity-weighted ranking: matches a slow RouteLLM-style reference, batch scoring, tiers."""

import json

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import get_router_class, load_router
from shared_core.routers.sw_ranking import SWRankingRouter, compute_tiers, fit_bradley_terry

MODELS = ["gpt-4-1106-preview", "claude-2.1", "mistralai/Mixtral-8x7B-Instruct-v0.1", "llama-13b"]


def battles(seed=0, n_prompts=12):
    """Prompts on two topics; the strong model is much better on maths than on chat."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_prompts):
        maths = i % 2 == 0
        prompt = f"solve the integral equation number {i}" if maths else f"chat about holiday plans {i}"
        for a in range(len(MODELS)):
            for b in range(a + 1, len(MODELS)):
                edge = (b - a) * (1.2 if maths else 0.3)  # earlier models are better
                p_a = 1 / (1 + np.exp(-edge))
                u = rng.random()
                winner = "model_a" if u < p_a - 0.1 else ("tie" if u < p_a + 0.1 else "model_b")
                rows.append((prompt, MODELS[a], MODELS[b], winner))
    return pd.DataFrame(rows, columns=["prompt", "model_a", "model_b", "winner"])


def reference_scores(df, embedder, prompts, tiers, strong, weak, gamma=10.0):
    """RouteLLM's algorithm, one prompt at a time: weighted logistic regression over tiers.

    Each battle is duplicated; a tie is one win of each side; weights are
    gamma ** (1 + sim / max_sim) on the battle prompt's cosine similarity.
    """
    from sklearn.linear_model import LogisticRegression

    emb = embedder.embed(list(df["prompt"]))
    ta = np.array([tiers[m] for m in df["model_a"]])
    tb = np.array([tiers[m] for m in df["model_b"]])
    n_tiers = max(tiers.values()) + 1
    X = np.zeros((len(df), n_tiers))
    X[np.arange(len(df)), ta] += np.log(10)
    X[np.arange(len(df)), tb] -= np.log(10)
    X2 = np.concatenate([X, X])
    y = np.concatenate([(df["winner"] != "model_b").to_numpy(), (df["winner"] == "model_a").to_numpy()]).astype(int)
    out = []
    for q in embedder.embed(prompts):
        sims = emb @ q
        w = gamma ** (1 + sims / sims.max())
        lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000)
        lr.fit(X2, y, sample_weight=np.concatenate([w, w]))
        beta = lr.coef_[0]
        out.append(1 / (1 + 10 ** (beta[tiers[weak]] - beta[tiers[strong]])))
    return np.array(out)


@pytest.fixture(scope="module")
def trained():
    return SWRankingRouter(HashEmbedder(32), num_tiers=3, progress=False).fit(battles())


def test_registered_as_sw_ranking():
    assert get_router_class("sw_ranking") is SWRankingRouter


def test_matches_slow_reference(trained):
    prompts = ["solve the integral equation number 2", "chat about holiday plans 3", "an unrelated question", "x"]
    tiers = {m: int(t) for m, t in zip(trained.models_, trained.tiers_)}
    # The reference embeds without int8 storage: compare with a float32-stored router.
    exact = SWRankingRouter(HashEmbedder(32), num_tiers=3, storage="float32", ridge=1e-9, progress=False)
    exact.fit(battles())
    expected = reference_scores(battles(), HashEmbedder(32), prompts, tiers, MODELS[0], MODELS[2])
    assert np.allclose(exact.score(prompts), expected, atol=1e-5)
    # The default int8 storage and ridge change little.
    assert np.allclose(trained.score(prompts), expected, atol=5e-3)


def test_batch_equals_one_at_a_time(trained):
    prompts = [f"solve the integral equation number {i}" for i in range(6)] + ["chat about holiday plans 1"]
    batch = trained.score(prompts)
    singles = np.array([trained.score([p])[0] for p in prompts])
    assert np.allclose(batch, singles, atol=1e-12)
    assert batch[:6].mean() > batch[6]


def test_tiers_group_consecutive_ratings():
    assert compute_tiers(np.array([5.0, 4.9, 1.0, 0.9, -3.0]), 3).tolist() == [0, 0, 1, 1, 2]
    assert compute_tiers(np.array([1.0, 3.0]), 5).tolist() == [1, 0]


def test_bradley_terry_recovers_strengths():
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    truth = np.array([1.0, 0.0, -1.0])
    p = 1 / (1 + np.exp(-(truth[pairs[:, 0]] - truth[pairs[:, 1]])))
    theta = fit_bradley_terry(p * 1e4, np.full(3, 1e4), pairs, 3, ridge=1e-9)[0]
    assert np.allclose(theta - theta.mean(), truth, atol=1e-6)
    # A never-losing item stays finite thanks to the ridge.
    theta = fit_bradley_terry(np.array([5.0, 5.0, 2.5]), np.array([5.0, 5.0, 5.0]), pairs, 3)[0]
    assert np.isfinite(theta).all() and theta[0] > theta[1]


def test_same_tier_pair_scores_one_half():
    router = SWRankingRouter(HashEmbedder(16), num_tiers=2, progress=False).fit(battles())
    s, w = router.models_.index(MODELS[0]), router.models_.index(MODELS[1])
    if router.tiers_[s] == router.tiers_[w]:
        assert router.score(["x"])[0] == 0.5
    router.weak = MODELS[0]
    with pytest.raises(ConfigError, match="same model"):
        router.score(["x"])


def test_save_load_round_trip_identical(trained, tmp_path):
    path = trained.save(tmp_path / "sw")
    loaded = load_router(path)
    prompts = ["solve the integral equation number 4", "chat about holiday plans 5", "hello"]
    assert np.array_equal(loaded.score(prompts), trained.score(prompts))
    config = json.loads((path / "config.json").read_text())
    assert config["router"] == "sw_ranking" and config["num_tiers"] == 3
    assert set(config["tiers"]) == set(MODELS)


def test_load_checks_battle_indices(trained, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = trained.save(tmp_path / "sw")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["battle_model_a"] = tensors["battle_model_a"] + 7
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ArtifactError, match=r"'battle_model_a' .* indices outside \[0, 4\)"):
        load_router(path)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="num_tiers must be an integer >= 2, got 1"):
        SWRankingRouter(HashEmbedder(8), num_tiers=1)
    with pytest.raises(ConfigError, match="gamma must be a number >= 1"):
        SWRankingRouter(HashEmbedder(8), gamma=0.5)
    with pytest.raises(ConfigError, match="storage must be one of int8, float16, float32, got 'int4'"):
        SWRankingRouter(HashEmbedder(8), storage="int4")
    with pytest.raises(ConfigError, match="strong model 'gpt-4-1106-preview' is not in the router's model table"):
        SWRankingRouter(HashEmbedder(8), progress=False).fit(battles().replace({MODELS[0]: "gpt-3"}))


def test_class_docstring_example_runs():
    import doctest

    import shared_core.routers.sw_ranking as module

    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0
