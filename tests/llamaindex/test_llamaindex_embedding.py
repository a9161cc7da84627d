"""LocalEmbedding: a shared_core embedder behind LlamaIndex's BaseEmbedding."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llamaindex_routellm import LocalEmbedding
from shared_core.embeddings import HashEmbedder
from shared_core.errors import ConfigError


def test_vectors_match_the_embedder_on_every_path():
    embedder = HashEmbedder(dim=16, seed=3)
    emb = LocalEmbedding(embedder)
    texts = ["the cat sat", "a dog ran", "the cat ran"]
    expected = embedder.embed(texts)
    assert emb.model_name == "hash-16-3"
    np.testing.assert_allclose(emb.get_text_embedding_batch(texts), expected, rtol=1e-6)
    np.testing.assert_allclose(emb.get_query_embedding("the cat sat"), expected[0], rtol=1e-6)
    np.testing.assert_allclose(asyncio.run(emb.aget_query_embedding("a dog ran")), expected[1], rtol=1e-6)
    np.testing.assert_allclose(asyncio.run(emb.aget_text_embedding_batch(texts)), expected, rtol=1e-6)


def test_rejects_what_is_not_an_embedder():
    with pytest.raises(ConfigError, match="shared_core.embeddings.Embedder"):
        LocalEmbedding("all-MiniLM-L6-v2")


@pytest.mark.slow  # loads the packaged MiniLM model (a few seconds)
def test_default_is_the_packaged_minilm_and_ranks_by_meaning():
    emb = LocalEmbedding()
    assert emb.model_name == "sentence-transformers/all-MiniLM-L6-v2:onnx-int8"  # the packaged graph, no torch
    query = emb.get_query_embedding("When does the office open in the morning?")
    docs = emb.get_text_embedding_batch(
        ["The office opens at 8:30 on weekdays.", "Fermat's little theorem concerns primes."]
    )
    assert len(query) == 384
    sims = np.asarray(docs) @ np.asarray(query)
    assert sims[0] > sims[1] + 0.2
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)


def test_to_dict_loads_back_and_model_name_must_name_the_embedder():
    # Before: from_dict (and any model_name=) raised "got multiple values for keyword argument 'model_name'".
    saved = LocalEmbedding(HashEmbedder(dim=8)).to_dict()
    loaded = LocalEmbedding.from_dict(saved, embedder=HashEmbedder(dim=8))
    assert loaded.model_name == "hash-8-0" and loaded.embed_batch_size == 16
    np.testing.assert_allclose(loaded.get_text_embedding("a cat"), HashEmbedder(dim=8).embed(["a cat"])[0], rtol=1e-6)
    default = LocalEmbedding.from_dict(LocalEmbedding(embed_batch_size=4).to_dict())  # no model is loaded yet
    assert default.model_name == "sentence-transformers/all-MiniLM-L6-v2:onnx-int8" and default.embed_batch_size == 4
    with pytest.raises(ConfigError, match=r"model_name 'hash-8-0' is not the embedder's name 'sentence-transformers"):
        LocalEmbedding.from_dict(saved)  # the default embedder is not the one saved
    with pytest.raises(ConfigError, match=r"model_name 'BAAI/bge-small-en' .*pass embedder="):
        LocalEmbedding(HashEmbedder(dim=8), model_name="BAAI/bge-small-en")
