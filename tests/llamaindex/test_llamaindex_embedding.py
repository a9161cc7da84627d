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
