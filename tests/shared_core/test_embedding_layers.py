"""Inner-layer token states from the embedders' forward pass (``Embedder.embed_layers``)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared_core.embeddings import PACKAGED_DIR, CachedEmbedder, Embedder, HashEmbedder, OnnxEmbedder
from shared_core.embeddings.onnx_graph import layer_output_names, with_float_outputs
from shared_core.errors import ConfigError, EmbeddingError, PromptError

TEXTS = ["hi", "Prove that there are infinitely many primes, step by step.", "What is the capital of France?"]
MODEL = PACKAGED_DIR / "model.onnx"


@pytest.fixture(scope="module")
def int8() -> OnnxEmbedder:
    return OnnxEmbedder(quantize="int8")


def test_packaged_graph_names_its_six_layers_and_gains_outputs_in_memory():
    raw = MODEL.read_bytes()
    names = layer_output_names(raw)
    assert sorted(names) == [1, 2, 3, 4, 5, 6]
    assert names[3] == "/st/st.0/encoder/layer.2/output/LayerNorm/LayerNormalization_output_0"
    augmented = with_float_outputs(raw, [names[3], names[5]])
    import onnxruntime as ort

    session = ort.InferenceSession(augmented, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["sentence_embedding", names[3], names[5]]
    assert MODEL.read_bytes() == raw  # the file is never written


def test_graph_edit_equals_the_onnx_library_s():
    onnx = pytest.importorskip("onnx")  # the train extra; scoring does not need it
    raw = MODEL.read_bytes()
    name = layer_output_names(raw)[3]
    reference = onnx.load_from_string(raw)
    reference.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                     ["batch", "sequence", "hidden"]))
    ours = onnx.load_from_string(with_float_outputs(raw, [name]))
    assert ours == reference  # the same message (the library writes fields in another order)
    onnx.checker.check_model(ours)


@pytest.mark.parametrize("data, message", [
    (b"\x3a\xff\xff\xff\xff\x0f", "runs past the end"),
    (b"\x0b", "wire type 3"),
    (b"\x08", "ends inside a protobuf varint"),
    (b"\x08\x07", "expected one graph in the ONNX model, found 0"),
])
def test_graph_edit_refuses_what_is_not_an_onnx_model(data, message):
    with pytest.raises(EmbeddingError, match=message):
        layer_output_names(data)


def test_onnx_layer_states_come_with_the_same_embeddings(int8):
    emb, states = int8.embed_layers(TEXTS, [3])
    assert emb.dtype == states.dtype == np.float32
    assert emb.shape == (3, 384) and states.shape == (3, 384)
    np.testing.assert_allclose(emb, int8.embed(TEXTS), rtol=0, atol=1e-6)
    assert not np.allclose(np.linalg.norm(states, axis=1), 1.0)  # means of token states, not normalised
    _, two = int8.embed_layers(TEXTS, (3, 6))
    np.testing.assert_allclose(two[:, :384], states, rtol=0, atol=1e-6)
    empty = int8.embed_layers([], [3])
    assert empty[0].shape == (0, 384) and empty[1].shape == (0, 384)


def test_onnx_layer_states_are_the_mean_of_the_layer_s_tokens(int8):
    """Against a session of the same graph with the layer as output, pooled here by hand."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    raw = MODEL.read_bytes()
    session = ort.InferenceSession(with_float_outputs(raw, [layer_output_names(raw)[3]]),
                                   providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(PACKAGED_DIR / "tokenizer.json"))
    enc = tokenizer.encode(TEXTS[1])
    feed = {"input_ids": np.array([enc.ids]), "attention_mask": np.array([enc.attention_mask]),
            "token_type_ids": np.array([enc.type_ids])}
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    tokens = session.run(None, feed)[1][0]
    np.testing.assert_allclose(int8.embed_layers([TEXTS[1]], [3])[1][0], tokens.mean(axis=0), rtol=0, atol=1e-5)


def test_padding_in_a_batch_is_left_out_of_the_mean(int8):
    batched = OnnxEmbedder(quantize="int8", batch_size=3)
    _, one = int8.embed_layers(TEXTS, [3])
    _, three = batched.embed_layers(TEXTS, [3])  # padded to the longest text
    cos = np.sum(one * three, axis=1) / np.linalg.norm(one, axis=1) / np.linalg.norm(three, axis=1)
    # int8 activations are quantized per batch, so not equal; padding tokens counted would move "hi" far
    assert cos.min() == pytest.approx(1.0, abs=0.01)


@pytest.mark.slow
def test_layer_numbers_are_those_of_the_torch_model(int8):
    """Layer 3 of the int8 graph is hidden_states[3] of the fp32 model (hidden_states[0] = the embeddings)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModel, AutoTokenizer

    from shared_core.embeddings import default_model_path

    path = default_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    _, states = int8.embed_layers(TEXTS, [3, 6])
    for i, text in enumerate(TEXTS):
        with torch.inference_mode():
            hidden = model(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        for j, layer in enumerate((3, 6)):
            ref = hidden[layer][0].mean(0).numpy()
            got = states[i, j * 384 : (j + 1) * 384]
            cosine = float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got))
            assert cosine == pytest.approx(1.0, abs=0.02)
        other = hidden[2][0].mean(0).numpy()
        assert float(other @ states[i, :384] / np.linalg.norm(other) / np.linalg.norm(states[i, :384])) < 0.99


@pytest.mark.slow
def test_sentence_transformers_layer_states_match_the_int8_graph_s(int8):
    from shared_core.embeddings import SentenceTransformerEmbedder

    torch_minilm = SentenceTransformerEmbedder(batch_size=2)
    emb, states = torch_minilm.embed_layers(TEXTS, [3, 6])
    np.testing.assert_allclose(emb, torch_minilm.embed(TEXTS), rtol=0, atol=1e-6)
    # one pass gives encode()'s embeddings also past the model's 256-token limit, in batches with padding
    long = ["word " * 400, "hi there", TEXTS[1]]
    np.testing.assert_allclose(torch_minilm.embed_layers(long, [3])[0], torch_minilm.embed(long), rtol=0, atol=1e-6)
    assert states.shape == (3, 768)
    ref = int8.embed_layers(TEXTS, [3, 6])[1].reshape(3, 2, 384)
    got = states.reshape(3, 2, 384)
    cosine = (ref * got).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cosine.min() == pytest.approx(0.99, abs=0.015)  # fp32 against int8 weights
    with pytest.raises(EmbeddingError, match="has no layer 7: it has layers 1-6"):
        torch_minilm.embed_layers(TEXTS, [7])


@pytest.mark.parametrize("layers, error, message", [
    ([], ConfigError, "one or more integers >= 1"),
    ([0], ConfigError, "one or more integers >= 1"),
    ([True], ConfigError, "one or more integers >= 1"),
    ([2.0], ConfigError, "one or more integers >= 1"),
    ("3", ConfigError, "a sequence of layer numbers"),
    (3, ConfigError, "a sequence of layer numbers"),
    ([3, 3], ConfigError, "must not repeat"),
    ([7], EmbeddingError, "has no layer 7 in .*its graph has layers 1, 2, 3, 4, 5, 6"),
])
def test_bad_layers_are_named(int8, layers, error, message):
    with pytest.raises(error, match=message):
        int8.embed_layers(TEXTS, layers)


def test_texts_are_checked_as_for_embed(int8):
    with pytest.raises(PromptError, match=r"texts\[1\] must be a string"):
        int8.embed_layers(["fine", None], [3])


def test_an_embedder_without_layers_says_which_do():
    class Plain(Embedder):
        name = "plain"
        dim = 4

        def _embed(self, texts: list[str], show_progress: bool) -> Any:
            return np.ones((len(texts), 4)) / 2

        def to_config(self) -> dict[str, Any]:
            return {"type": "plain", "name": "plain", "dim": 4}

    with pytest.raises(EmbeddingError, match="'plain' .* gives no inner-layer token states; the ONNX embedders"):
        Plain().embed_layers(["x"], [1])


def test_onnx_embedder_pickles_and_copies_after_loading_layer_sessions(int8):
    expected = int8.embed_layers(TEXTS[:1], [3])[1]
    for clone in (pickle.loads(pickle.dumps(int8)), copy.deepcopy(int8)):
        assert clone._layered == {}  # sessions are loaded again, not copied
        np.testing.assert_allclose(clone.embed_layers(TEXTS[:1], [3])[1], expected, rtol=0, atol=1e-6)


def test_metadata_builds_no_session_of_its_own(tmp_path: Path):
    # The default reads layer 3 from a second, layered session; its SHA-256, dimension and config (read when a
    # router is saved or wrapped in a cache) come from the checked meta.json, not from a plain session of their own.
    emb = OnnxEmbedder(quantize="int8")
    emb.embed_layers(TEXTS[:1], [3])
    cached = CachedEmbedder(emb, cache_dir=tmp_path)
    cached.embed_layers(TEXTS[1:2], [3])
    config = emb.to_config()
    assert (config["sha256"], config["dim"], emb.sha256, emb.dim) == (
        json.loads((PACKAGED_DIR / "meta.json").read_text())["sha256"], 384, config["sha256"], 384)
    assert emb._loaded.value is None and list(emb._layered) == [(3,)]


def test_a_wrong_expected_sha256_fails_metadata_and_layer_sessions_alike():
    emb = OnnxEmbedder(quantize="int8", sha256="0" * 64)
    for read in (lambda: emb.sha256, lambda: emb.to_config(), lambda: emb.embed_layers(["x"], [3])):
        with pytest.raises(EmbeddingError, match="the router was trained with the file of SHA-256 0000"):
            read()


class CountingLayers(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(8)
        self.calls: list[list[str]] = []

    def _embed_layers(self, texts, layers, show_progress):
        self.calls.append(list(texts))
        return super()._embed_layers(texts, layers, show_progress)


def test_cache_keeps_layer_states_per_layer_set(tmp_path: Path):
    inner = CountingLayers()
    cached = CachedEmbedder(inner, tmp_path)
    first = cached.embed_layers(TEXTS + TEXTS[:1], [1, 2])
    assert inner.calls == [TEXTS]  # each text once
    again = cached.embed_layers(TEXTS, [1, 2])
    assert inner.calls == [TEXTS]  # all from the cache
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[:3], b)
    np.testing.assert_array_equal(first[0], cached.embed(TEXTS + TEXTS[:1]))  # same space as embed
    other = cached.embed_layers(TEXTS[:1], [1])  # another layer set: its own space
    assert inner.calls == [TEXTS, TEXTS[:1]]
    np.testing.assert_array_equal(other[1], first[1][:1, :8])
    direct = HashEmbedder(8).embed_layers(TEXTS, [1, 2])
    np.testing.assert_allclose(again[1], direct[1], atol=1e-7)


def test_hash_embedder_fakes_distinct_layers():
    emb, states = HashEmbedder(16).embed_layers(TEXTS, [1, 2])
    assert states.shape == (3, 32)
    assert not np.allclose(states[:, :16], states[:, 16:]) and not np.allclose(states[:, :16], emb)
    np.testing.assert_array_equal(HashEmbedder(16).embed_layers(TEXTS, [2])[1], states[:, 16:])
