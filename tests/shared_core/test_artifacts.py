"""Saved-router directories: every broken or mismatched artifact raises ArtifactError naming the value."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from shared_core.artifacts import check_reference_quantiles, reference_quantiles, resolve_embedder
from shared_core.embeddings import CachedEmbedder, HashEmbedder
from shared_core.errors import ArtifactError
from shared_core.routers import load_router
from shared_core.routers.mf import MatrixFactorizationRouter
from shared_core.routers.sw_ranking import SWRankingRouter


def tiny_battles():
    rows = [(f"question {i} about {'maths' if i % 2 else 'chat'}", "strong", "weak", "model_a" if i % 2 else "tie")
            for i in range(20)]
    rows += [(f"question {i}", "strong", "mid", "model_b") for i in range(5)]
    return pd.DataFrame(rows, columns=["prompt", "model_a", "model_b", "winner"])


@pytest.fixture(scope="module", params=["mf", "sw_ranking"])
def saved(request, tmp_path_factory):
    emb = HashEmbedder(16)
    if request.param == "mf":
        router = MatrixFactorizationRouter(emb, strong="strong", weak="weak", dim=8, epochs=2, progress=False)
    else:
        router = SWRankingRouter(emb, strong="strong", weak="weak", num_tiers=3, progress=False)
    router.fit(tiny_battles())
    router.reference_quantiles_ = reference_quantiles(router.score([f"question {i}" for i in range(10)]))
    return router, router.save(tmp_path_factory.mktemp(request.param) / "router")


def copy(path, tmp_path):
    import shutil

    return shutil.copytree(path, tmp_path / "copy")


def test_round_trip_keeps_scores_and_quantiles(saved):
    router, path = saved
    loaded = load_router(path)
    prompts = ["question 3 about maths", "something else"]
    assert np.array_equal(loaded.score(prompts), router.score(prompts))
    assert np.array_equal(loaded.reference_quantiles, router.reference_quantiles)
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 1 and config["models"] == ["mid", "strong", "weak"]
    assert len(config["reference_quantiles"]) == 101


def test_a_label_is_saved_and_reloaded_beside_the_kind(saved, tmp_path):
    router, _ = saved
    labelled = load_router(router.save(tmp_path / "plain"))
    assert labelled.label == router.name and "label" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    labelled.label = f"{router.name}_small"
    path = labelled.save(tmp_path / "labelled")
    config = json.loads((path / "config.json").read_text())
    assert (config["router"], config["label"]) == (router.name, f"{router.name}_small")
    loaded = load_router(path)
    assert (loaded.name, loaded.label) == (router.name, f"{router.name}_small")
    assert loaded.route(["question 3"], 0.5)[0].router == f"{router.name}_small"


@pytest.mark.parametrize("label", ["", "  ", 3, ["a"]])
def test_a_bad_label_is_named(saved, tmp_path, label):
    _, path = saved
    with pytest.raises(ArtifactError, match="'label' must be a non-empty string, got " + re.escape(repr(label))):
        load_router(edit_config(path, tmp_path, label=label))


def test_missing_directory_config_and_weights(saved, tmp_path):
    _, path = saved
    with pytest.raises(ArtifactError, match="'/nonexistent/router' does not exist"):
        load_router("/nonexistent/router")
    broken = copy(path, tmp_path)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="has no model.safetensors"):
        load_router(broken)
    (broken / "config.json").unlink()
    with pytest.raises(ArtifactError, match="has no config.json"):
        load_router(broken)


def test_corrupt_files(saved, tmp_path):
    _, path = saved
    broken = copy(path, tmp_path)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="is not a readable safetensors file"):
        load_router(broken)
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(ArtifactError, match="config.json' is not valid JSON"):
        load_router(broken)


def edit_config(path, tmp_path, **changes):
    broken = copy(path, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config.update(changes)
    (broken / "config.json").write_text(json.dumps(config))
    return broken


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format_version": 99}, "format_version 99"),
        ({"scoring_pair": {"strong": "gpt-9", "weak": "weak"}}, "strong model 'gpt-9' is not in the router's model table"),
        ({"models": ["a", "A", "b"]}, "names the same model twice: 'a' and 'A'"),
        ({"reference_quantiles": [0.5] * 100}, "must hold 101 numbers"),
        ({"reference_quantiles": [0.5] * 100 + [0.1]}, r"non-decreasing, but entry 100 \(0.1\) < entry 99 \(0.5\)"),
        ({"embedder": {"type": "hash", "name": "hash-16-0"}}, "must be an object with 'name' and 'dim'"),
        ({"embedder": {"type": "nope", "name": "x", "dim": 16}}, "cannot rebuild embedder 'x'"),
    ],
)
def test_bad_config_values_are_named(saved, tmp_path, changes, message):
    _, path = saved
    with pytest.raises(ArtifactError, match=message):
        load_router(edit_config(path, tmp_path, **changes))


def test_tensor_shape_mismatch_is_named(saved, tmp_path):
    router, path = saved
    models = ["mid", "strong", "weak", "extra"]
    tiers = {"tiers": {m: i % 3 for i, m in enumerate(models)}} if router.name == "sw_ranking" else {}
    broken = edit_config(path, tmp_path, models=models, **tiers)
    expected = r"'P.weight' .* has shape \(3, 8\), expected \(4, 8\)" if router.name == "mf" else "indices outside"
    if router.name == "sw_ranking":
        broken = edit_config(path, tmp_path / "x", embedder={"type": "hash", "name": "hash-8-0", "dim": 8, "seed": 0})
        expected = r"'prompt_embeddings' .* has shape \(\d+, 16\), expected \(any, 8\)"
    with pytest.raises(ArtifactError, match=expected):
        load_router(broken)


def test_embedder_mismatch_is_named(saved):
    _, path = saved
    with pytest.raises(ArtifactError, match="embedder 'hash-16-7' does not match the embedder 'hash-16-0'"):
        load_router(path, embedder=HashEmbedder(16, seed=7))
    wrong_dim = HashEmbedder(32)
    wrong_dim.name = "hash-16-0"
    with pytest.raises(ArtifactError, match="has dimension 32, but router .* needs 16"):
        load_router(path, embedder=wrong_dim)


def test_cache_only_when_asked(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    _, path = saved
    assert not isinstance(load_router(path).embedder, CachedEmbedder)
    cached = load_router(path, cache=True)
    assert isinstance(cached.embedder, CachedEmbedder) and cached.embedder.name == "hash-16-0"
    config = json.loads((path / "config.json").read_text())
    assert resolve_embedder(config, path, HashEmbedder(16)).name == "hash-16-0"


def test_reference_quantiles_checks():
    q = reference_quantiles(np.linspace(0, 1, 1001))
    assert q.shape == (101,) and q[50] == pytest.approx(0.5)
    with pytest.raises(ArtifactError, match=r"numbers in \[0, 1\]"):
        check_reference_quantiles([2.0] * 101)



def poison(directory, tensor, value):
    """Set one element of ``tensor`` in ``directory``'s weights to ``value``, written past our checks."""
    from safetensors.numpy import load_file, save_file

    weights = directory / "model.safetensors"
    tensors = load_file(str(weights))
    array = tensors[tensor].copy()
    array.reshape(-1)[-1] = value
    tensors[tensor] = array
    save_file(tensors, str(weights), metadata={"format": "np"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_at_load(saved, tmp_path, value):
    router, path = saved
    tensor = "P.weight" if router.name == "mf" else "battle_outcome"
    broken = copy(path, tmp_path)
    poison(broken, tensor, value)
    with pytest.raises(ArtifactError, match=rf"model.safetensors'.*tensor '{tensor}' holds 1 NaN or infinite"):
        load_router(broken)


@pytest.mark.parametrize("tensor", ["head_coef", "labels", "group_value"])
def test_non_finite_weights_of_the_shipped_default_router_are_refused(tmp_path, tensor):
    import shutil

    from shared_core.engine import CHECKPOINTS

    broken = shutil.copytree(CHECKPOINTS / "adaptive_ensemble", tmp_path / "default")  
    poison(broken, tensor, float("nan"))
    with pytest.raises(ArtifactError, match=rf"{tmp_path}/default/model.safetensors'.*tensor '{tensor}'"):
        load_router(broken)


def test_non_finite_weights_are_not_saved(tmp_path):
    from shared_core.artifacts import write_artifact

    with pytest.raises(ArtifactError, match="cannot save .*tensor 'w' holds 1 NaN"):
        write_artifact(tmp_path / "r", {"router": "mf"}, {"w": np.array([1.0, np.nan])})
    assert not (tmp_path / "r" / "model.safetensors").exists()
