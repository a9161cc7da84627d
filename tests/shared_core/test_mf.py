"""Matrix-factorization router: learns a planted preference, batch scoring, RouteLLM checkpoints."""

import json

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import get_router_class, load_router
from shared_core.routers._models import ROUTELLM_MF_MODELS
from shared_core.routers.mf import MatrixFactorizationRouter

HARD = [f"prove the theorem about group {i} algebra" for i in range(40)]
EASY = [f"write a friendly hello note number {i}" for i in range(40)]


def planted_battles():
    """The strong model wins hard prompts; on easy prompts the weak one is as good (tie) or better."""
    rows = []
    for p in HARD:
        rows += [(p, "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1", "model_a"),
                 (p, "claude-2.1", "mistralai/Mixtral-8x7B-Instruct-v0.1", "model_a"),
                 (p, "gpt-4-1106-preview", "claude-2.1", "tie")]
    for i, p in enumerate(EASY):
        rows += [(p, "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1", "tie" if i % 2 else "model_b"),
                 (p, "claude-2.1", "mistralai/Mixtral-8x7B-Instruct-v0.1", "tie"),
                 (p, "gpt-4-1106-preview", "claude-2.1", "tie")]
    return pd.DataFrame(rows, columns=["prompt", "model_a", "model_b", "winner"])


@pytest.fixture(scope="module")
def trained():
    router = MatrixFactorizationRouter(HashEmbedder(32), dim=16, epochs=60, batch_size=64, progress=False)
    return router.fit(planted_battles())


def test_registered_as_mf():
    assert get_router_class("mf") is MatrixFactorizationRouter


def test_learns_planted_preference(trained):
    hard, easy = trained.score(HARD), trained.score(EASY)
    assert hard.min() > easy.max()
    assert hard.mean() == pytest.approx(0.9, abs=0.1)
    assert easy.mean() == pytest.approx(0.35, abs=0.15)
    assert trained.models_ == ["claude-2.1", "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"]


def test_scoring_is_one_matvec_over_the_batch(trained):
    emb = trained.embedder.embed(HARD + EASY)
    assert np.allclose(trained.score(HARD + EASY), trained.score_embeddings(emb))
    singles = np.array([trained.score([p])[0] for p in HARD[:5]])
    assert np.allclose(singles, trained.score(HARD[:5]))
    u = trained.direction()
    assert u.shape == (32,)
    assert np.allclose(trained.score_embeddings(emb), 1 / (1 + np.exp(-emb @ u)))


def test_seeded_training_is_reproducible(trained):
    again = MatrixFactorizationRouter(HashEmbedder(32), dim=16, epochs=60, batch_size=64, progress=False)
    again.fit(planted_battles())
    assert np.array_equal(again.P_, trained.P_)
    other = MatrixFactorizationRouter(HashEmbedder(32), dim=16, epochs=60, batch_size=64, seed=1, progress=False)
    assert not np.array_equal(other.fit(planted_battles()).P_, trained.P_)


def test_scoring_pair_is_configurable_and_aliases_match(trained):
    default = trained.score(HARD[:3])
    # The arena-bench spelling without the org prefix names the same model.
    trained_alias = MatrixFactorizationRouter.__new__(MatrixFactorizationRouter)
    trained_alias.__dict__.update(trained.__dict__)
    trained_alias.weak = "Mixtral-8x7B-Instruct-v0.1"
    assert np.allclose(trained_alias.score(HARD[:3]), default)
    trained_alias.weak = "claude-2.1"
    assert trained_alias.score(HARD[:3]).mean() == pytest.approx(0.5, abs=0.2)
    trained_alias.weak = "llama-2"
    with pytest.raises(ConfigError, match="weak model 'llama-2' is not in the router's model table"):
        trained_alias.score(HARD[:1])


def test_fit_checks_the_pair_and_settings():
    with pytest.raises(ConfigError, match="strong model 'gpt-5' is not in the router's model table"):
        MatrixFactorizationRouter(HashEmbedder(8), strong="gpt-5", progress=False).fit(planted_battles())
    with pytest.raises(ConfigError, match="same model"):
        MatrixFactorizationRouter(HashEmbedder(8), strong="Mixtral-8x7B-Instruct-v0.1")
    with pytest.raises(ConfigError, match="ties must be one of half, drop, got 'keep'"):
        MatrixFactorizationRouter(HashEmbedder(8), ties="keep")
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        MatrixFactorizationRouter(HashEmbedder(8), epochs=0)
    with pytest.raises(ConfigError, match="not trained"):
        MatrixFactorizationRouter(HashEmbedder(8)).score(["x"])


def test_ties_drop_trains_on_decisive_battles_only():
    router = MatrixFactorizationRouter(HashEmbedder(32), dim=16, epochs=60, batch_size=64, ties="drop", progress=False)
    router.fit(planted_battles())
    assert router.training_["battles_used"] == 100  # 40 + 40 hard wins, 20 easy weak wins
    assert router.score(HARD).mean() > router.score(EASY).mean()


def test_save_load_round_trip_identical(trained, tmp_path):
    trained.reference_quantiles_ = np.linspace(0.1, 0.9, 101)
    path = trained.save(tmp_path / "mf")
    trained.reference_quantiles_ = None
    loaded = load_router(path)
    assert isinstance(loaded, MatrixFactorizationRouter)
    assert np.array_equal(loaded.score(HARD + EASY), trained.score(HARD + EASY))
    assert np.allclose(loaded.reference_quantiles, np.linspace(0.1, 0.9, 101))
    config = json.loads((path / "config.json").read_text())
    assert config["embedder"] == {"type": "hash", "name": "hash-32-0", "dim": 32, "seed": 0}
    assert config["scoring_pair"] == {"strong": "gpt-4-1106-preview", "weak": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    assert config["training"]["epochs"] == 60 and config["training"]["seed"] == 0
    # Another scoring pair at load time drops the quantiles, which belong to the saved pair.
    other = MatrixFactorizationRouter.from_pretrained(path, weak="claude-2.1")
    assert other.reference_quantiles is None and other.weak == "claude-2.1"


def write_routellm_checkpoint(path, *, dim=8, text_dim=16, key="dim", seed=0):
    """A synthetic checkpoint in RouteLLM's published layout (PyTorchModelHubMixin)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.mkdir()
    config = {key: dim, "num_models": 64, "text_dim": text_dim, "num_classes": 1, "use_proj": True}
    (path / "config.json").write_text(json.dumps(config))
    tensors = {
        "P.weight": rng.standard_normal((64, dim)).astype(np.float32),
        "text_proj.0.weight": rng.standard_normal((dim, text_dim)).astype(np.float32),
        "classifier.0.weight": rng.standard_normal((1, dim)).astype(np.float32),
    }
    save_file(tensors, str(path / "model.safetensors"))
    return tensors


def reference_win_rate(t, e, strong_id, weak_id):
    """RouteLLM's MFModel.pred_win_rate, written out in numpy for one prompt."""
    p = t["P.weight"][[strong_id, weak_id]]
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    logits = (p * (t["text_proj.0.weight"] @ e)) @ t["classifier.0.weight"][0]
    return 1 / (1 + np.exp(-(logits[0] - logits[1])))


@pytest.mark.parametrize("key", ["dim", "hidden_size"])
def test_routellm_checkpoint_layout_loads(tmp_path, key):
    tensors = write_routellm_checkpoint(tmp_path / "ckpt", key=key)
    emb = HashEmbedder(16)
    router = load_router(tmp_path / "ckpt", embedder=emb)
    assert isinstance(router, MatrixFactorizationRouter)
    assert router.models_ == list(ROUTELLM_MF_MODELS)
    assert ROUTELLM_MF_MODELS.index("gpt-4-1106-preview") == 24
    assert ROUTELLM_MF_MODELS.index("mixtral-8x7b-instruct-v0.1") == 36
    prompts = ["one prompt", "another, longer prompt about maths"]
    e = emb.embed(prompts)
    expected = [reference_win_rate(tensors, row, 24, 36) for row in e]
    assert np.allclose(router.score(prompts), expected, atol=1e-6)
    # Saved again, it is one of ours.
    again = load_router(router.save(tmp_path / "ours"), embedder=emb)
    assert np.allclose(again.score(prompts), expected, atol=1e-6)


def test_routellm_checkpoint_needs_the_caller_to_name_the_remote_embedder(tmp_path, monkeypatch):
    """A RouteLLM checkpoint embeds with OpenAI, but loading it never sends prompts anywhere by itself."""
    from shared_core.embeddings import OpenAICompatibleEmbedder

    write_routellm_checkpoint(tmp_path / "ckpt", text_dim=1536)
    with pytest.raises(ConfigError, match="pass the embedder that sends prompts there yourself"):
        load_router(tmp_path / "ckpt")
    router = load_router(tmp_path / "ckpt", embedder=OpenAICompatibleEmbedder("text-embedding-3-small"))
    assert router.embedder.name == "openai:text-embedding-3-small" and router.embedder.dim == 1536


def test_routellm_checkpoint_errors(tmp_path):
    write_routellm_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ArtifactError, match="has dimension 32, but RouteLLM checkpoint .* needs text_dim=16"):
        load_router(tmp_path / "ckpt", embedder=HashEmbedder(32))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "num_models": 65}))
    with pytest.raises(ArtifactError, match="num_models=65"):
        load_router(tmp_path / "ckpt", embedder=HashEmbedder(16))
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "dim": 9}))
    with pytest.raises(ArtifactError, match=r"tensor 'P.weight' .* has shape \(64, 8\), expected \(64, 9\)"):
        load_router(tmp_path / "ckpt", embedder=HashEmbedder(16))


def test_class_docstring_example_runs():
    import doctest

    import shared_core.routers.mf as module

    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0


def test_fit_leaves_global_torch_state_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    MatrixFactorizationRouter(HashEmbedder(8), dim=4, epochs=1, progress=False).fit(planted_battles())
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
