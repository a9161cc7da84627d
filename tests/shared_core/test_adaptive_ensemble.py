"""The adaptive_ensemble router and its recipe (fast: HashEmbedder, tiny data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import load_router
from shared_core.routers.adaptive_ensemble import (
    FEATURE_NAMES,
    AdaptiveEnsembleRouter,
    adaptive_features,
    fit_softmax,
)
from shared_core.routers.ensemble import EnsembleRouter
from shared_core.training.recipes import get_recipe

HARD = ["prove the theorem about primes", "solve the integral of x squared", "derive the proof by induction"]
EASY = ["say hello to my friend", "write a short greeting", "say hi politely"]
LABELLED = pd.DataFrame({"prompt": HARD + EASY, "label": [1.0] * 3 + [0.0] * 3, "source": "demo"})


def fitted(**kw) -> AdaptiveEnsembleRouter:
    return AdaptiveEnsembleRouter(HashEmbedder(32), banks={"demo": {"k": 2}}, **kw).fit(LABELLED)


def test_scores_follow_labels_and_round_trip(tmp_path):
    router = fitted()
    scores = router.score(HARD + EASY)
    assert scores[:3].min() > scores[3:].max()
    assert ((scores >= 0) & (scores <= 1)).all()
    router.save(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["router"] == "adaptive_ensemble" and config["features"]["names"] == list(FEATURE_NAMES)
    again = load_router(tmp_path / "r")
    assert type(again) is AdaptiveEnsembleRouter and again.sim_low == pytest.approx(0.35)
    np.testing.assert_allclose(again.score(HARD + EASY), scores, rtol=0, atol=1e-6)


def test_knn_weight_follows_similarity():
    router = fitted(sim_low=0.0, sim_high=0.5, sim_k=1)
    emb = router.embedder.embed(HARD + ["completely unrelated words zebra quantum"])
    w = router.knn_weights(emb)
    # a training prompt is its own nearest neighbour (cosine ~1): full knn weight
    assert w[:3] == pytest.approx([0.7] * 3, abs=1e-6)
    assert ((w >= 0) & (w <= 0.7 + 1e-9)).all()


def test_close_prompts_score_like_ensemble_far_ones_like_the_head():
    router = fitted(knn_weight=0.3, sim_low=-1.0, sim_high=-0.999)  # every prompt is close: fixed weight 0.3
    ens = EnsembleRouter(HashEmbedder(32), banks={"demo": {"k": 2}}, head_weight=0.7).fit(LABELLED)
    emb = router.embedder.embed(HARD)
    knn = router.score_embeddings(emb)
    np.testing.assert_allclose(knn, ens.score_embeddings(emb), atol=1e-9)
    np.testing.assert_allclose(router.score(HARD), 0.3 * knn + 0.7 * router.head_scores(HARD, emb), atol=1e-9)
    far = fitted(sim_low=0.999, sim_high=1.0, sim_k=6)  # no prompt is close: head alone
    emb = far.embedder.embed(EASY)
    np.testing.assert_allclose(far.score(EASY), far.head_scores(EASY, emb), atol=1e-9)


def test_features_extend_ensemble_features():
    feats = adaptive_features(["Each apple costs 3 dollars; what is the total?", "Write a python function"])
    assert feats.shape == (2, len(FEATURE_NAMES)) == (2, 12)
    assert feats[0, -2] == pytest.approx(np.log1p(4))  # each, costs, dollars, total
    assert feats[1, -1] == pytest.approx(np.log1p(2))  # python, function


@pytest.mark.parametrize(
    "kw", [{"knn_weight": 1.5}, {"knn_weight": -0.1}, {"sim_low": 0.5, "sim_high": 0.4}, {"sim_k": 0}, {"sim_high": 2}]
)
def test_bad_settings_raise_early(kw):
    with pytest.raises(ConfigError):
        AdaptiveEnsembleRouter(HashEmbedder(32), **kw)


def test_artifact_with_other_features_is_rejected(tmp_path):
    fitted().save(tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    config = json.loads(path.read_text())
    config["features"]["names"] = config["features"]["names"][:-1]
    path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="prompt features"):
        load_router(tmp_path / "r")


def test_recipe_is_registered():
    assert get_recipe("adaptive_ensemble").__name__ == "train_adaptive_ensemble"


GROUPED = LABELLED.assign(group=["maths", "maths", "logic", "chat", "chat", "greeting"])


def test_group_classifier_mixes_into_its_bank_and_round_trips(tmp_path):
    router = AdaptiveEnsembleRouter(HashEmbedder(32), banks={"demo": {"k": 2}}, group_mix=1.0,
                                    group_prior_weight=0.0).fit(GROUPED)
    assert router.groups_ == ["chat", "greeting", "logic", "maths"] and router.group_source_ == "demo"
    np.testing.assert_allclose(router.group_value_, [0.0, 0.0, 1.0, 1.0])
    emb = router.embedder.embed(HARD + EASY)
    g = router.group_scores(emb)
    assert g[:3].min() > 0.5 > g[3:].max()  # the classifier fits its six training prompts
    # one bank and group_mix 1: the neighbour score is the group score
    np.testing.assert_allclose(router.score_embeddings(emb), g, atol=1e-9)
    router.save(tmp_path / "r")
    again = load_router(tmp_path / "r")
    np.testing.assert_allclose(again.score(HARD + EASY), router.score(HARD + EASY), atol=1e-6)


def test_fit_softmax_matches_separable_classes():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    coef, bias = fit_softmax(x, np.array([0, 0, 1, 1]), 2, c=1.0)
    p = np.exp(x @ coef + bias)
    p /= p.sum(axis=1, keepdims=True)
    assert (p[:2, 0] > 0.5).all() and (p[2:, 1] > 0.5).all()
    # the L2 penalty is symmetric in the two classes: the optimum has coef[:, 0] == -coef[:, 1]
    np.testing.assert_allclose(coef[:, 0], -coef[:, 1], atol=1e-5)


def test_groups_from_two_sources_raise():
    data = pd.concat([GROUPED, GROUPED.assign(source="other")], ignore_index=True)
    with pytest.raises(ConfigError, match="one source"):
        AdaptiveEnsembleRouter(HashEmbedder(32)).fit(data)


DIFFICULTY = pd.DataFrame({"prompt": HARD + EASY, "difficulty": [0.9, 0.8, 0.7, 0.1, 0.2, 0.0],
                           "source": ["a", "a", "b", "b", "b", "b"]})
REFERENCE = HARD + EASY + ["a question about numbers", "hello there"]


def test_difficulty_head_orders_like_the_standardised_blend_and_round_trips(tmp_path):
    base = fitted()
    s = base.score(REFERENCE)
    router = fitted().fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4, alpha=1.0)
    d = router.difficulty_scores(router.embedder.embed(REFERENCE))
    blended = 0.6 * (s - s.mean()) / s.std() + 0.4 * (d - d.mean()) / d.std()
    scores = router.score(REFERENCE)
    raw = s + router.difficulty_scale_ * (d - router.difficulty_center_)
    np.testing.assert_allclose(scores, np.clip(raw, 0, 1), atol=1e-9)
    # before the clip, every pair of prompts is in the order of the standardised blend
    np.testing.assert_array_equal(np.sign(np.round(raw[:, None] - raw[None, :], 9)),
                                  np.sign(np.round(blended[:, None] - blended[None, :], 9)))
    assert router.difficulty_scale_ == pytest.approx(0.4 / 0.6 * s.std() / d.std(), rel=1e-9)
    assert router.difficulty_center_ == pytest.approx(d.mean(), abs=1e-12)
    assert not np.allclose(scores, s)
    assert router.training_["difficulty"]["prompts"] == {"a": 2, "b": 4}
    router.save(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert set(config["difficulty"]) == {"blend", "intercept", "scale", "center"}
    again = load_router(tmp_path / "r")
    np.testing.assert_allclose(again.score(REFERENCE), scores, rtol=0, atol=1e-6)
    config["difficulty"]["scale"] = "big"
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="config 'difficulty' needs a number 'scale'"):
        load_router(tmp_path / "r")


class LayerCounting(HashEmbedder):
    """A hash embedder that counts its forward passes (embed and embed_layers calls)."""

    def __init__(self) -> None:
        super().__init__(32)
        self.passes = 0

    def _embed(self, texts, show_progress):
        self.passes += 1
        return super()._embed(texts, show_progress)

    def _embed_layers(self, texts, layers, show_progress):
        self.passes += 1
        emb = HashEmbedder._embed(self, texts, show_progress)
        return emb, np.hstack([HashEmbedder(32, seed=f"0/layer{n}")._embed(texts, False) for n in layers])


def test_difficulty_head_on_layer_states_reads_them_in_one_pass_and_round_trips(tmp_path):
    router = fitted().fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4, alpha=1.0, layers=[2, 3])
    assert router.embedding_layers == (2, 3) and router.difficulty_coef_.shape == (64,)
    emb, states = router.embedder.embed_layers(REFERENCE, (2, 3))
    on_states = router.difficulty_scores(states)
    # the head reads the layer states, not the embedding: fitted on the embedding it predicts otherwise
    on_embedding = fitted().fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4, alpha=1.0)
    assert not np.allclose(on_states, on_embedding.difficulty_scores(emb))
    s = fitted().score(REFERENCE)
    np.testing.assert_allclose(router.score(REFERENCE),
                               np.clip(s + router.difficulty_scale_ * (on_states - router.difficulty_center_), 0, 1),
                               atol=1e-9)
    assert router.training_["difficulty"]["input"] == "mean token states of the embedder's layers [2, 3]"
    counting = LayerCounting()
    router.embedder = counting
    router.score(REFERENCE)
    assert counting.passes == 1  # the embedding and the layer states come from one forward pass
    router.embedder = HashEmbedder(32)
    router.save(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["difficulty"]["layers"] == [2, 3]
    again = load_router(tmp_path / "r")
    assert again.embedding_layers == (2, 3)
    np.testing.assert_allclose(again.score(REFERENCE), router.score(REFERENCE), rtol=0, atol=1e-6)
    # a refit on the sentence embedding drops the layers
    assert fitted().fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4).embedding_layers == ()
    # an embedder without inner layers fails the fit and leaves the router as it was
    from shared_core.embeddings.base import Embedder
    from shared_core.errors import EmbeddingError

    class NoLayers(Embedder):
        name, dim = "hash-32-0", 32

        def _embed(self, texts, show_progress):
            return HashEmbedder(32)._embed(texts, show_progress)

        def to_config(self):
            return HashEmbedder(32).to_config()

    kept = fitted().fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4, alpha=1.0)
    before = kept.score(REFERENCE)
    kept.embedder = NoLayers()
    with pytest.raises(EmbeddingError, match="gives no inner-layer token states"):
        kept.fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4, layers=[3])
    assert kept.embedding_layers == () and np.allclose(kept.score(REFERENCE), before)
    for bad, message in (([0], "must be one or more integers >= 1"), ([3, 3], "must not repeat"),
                         ("3", "must be a sequence of layer numbers")):
        config["difficulty"]["layers"] = bad
        (tmp_path / "r" / "config.json").write_text(json.dumps(config))
        with pytest.raises(ArtifactError, match=f"config 'difficulty' 'layers': layers {message}"):
            load_router(tmp_path / "r")
    config["difficulty"]["layers"] = [2]  # the saved head reads two layers
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="difficulty_coef"):
        load_router(tmp_path / "r")


def test_feedback_over_a_layer_head_embeds_once():
    from shared_core.routers.feedback import FeedbackRouter

    base = fitted().fit_difficulty(DIFFICULTY, REFERENCE, blend=0.4, alpha=1.0, layers=[3])
    expected = base.score(REFERENCE)
    counting = LayerCounting()
    base.embedder = counting
    router = FeedbackRouter(base)
    np.testing.assert_allclose(router.score(REFERENCE), expected, atol=1e-9)
    assert counting.passes == 1


@pytest.mark.parametrize("frame, kw, message", [
    (DIFFICULTY, {"blend": 0.2, "layers": [0]}, "layers must be one or more integers >= 1"),
    (DIFFICULTY, {"blend": 0.2, "layers": 3}, "layers must be a sequence of layer numbers"),
    (DIFFICULTY, {"blend": 0.2, "layers": None}, "layers must be a sequence of layer numbers"),
    (DIFFICULTY, {"blend": 0.0}, "blend must be"),
    (DIFFICULTY, {"blend": 1.0}, r"blend must be in \(0, 1\), got 1.0"),
    (DIFFICULTY, {"blend": 0.2, "alpha": 0.0}, "alpha must be"),
    (DIFFICULTY.drop(columns="source"), {"blend": 0.2}, r"needs columns \['source'\]"),
    (DIFFICULTY.assign(difficulty=[1.5, 0, 0, 0, 0, 0]), {"blend": 0.2}, r"difficulties must be numbers in \[0, 1\]"),
])
def test_difficulty_head_refuses_bad_input(frame, kw, message):
    with pytest.raises(ConfigError, match=message):
        fitted().fit_difficulty(frame, REFERENCE, **kw)
    with pytest.raises(ConfigError, match="scaled on the reference prompts; got 1"):
        fitted().fit_difficulty(DIFFICULTY, ["one"], blend=0.2)
