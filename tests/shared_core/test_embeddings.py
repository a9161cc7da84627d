"""Embedders: the contract, the cache, the OpenAI-compatible client and the real MiniLM model."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shared_core
from shared_core.cache import EmbeddingCache, check_cache_dir, default_cache_dir, space_key
from shared_core.embeddings import (
    DEFAULT_DIM,
    DEFAULT_MODEL,
    MAX_TEXT_CHARS,
    PACKAGED_DIR,
    CachedEmbedder,
    Embedder,
    HashEmbedder,
    Model2VecEmbedder,
    OnnxEmbedder,
    OpenAICompatibleEmbedder,
    SentenceTransformerEmbedder,
    blas_limit,
    embedder_from_config,
    get_embedder,
    onnx_runtime,
)
from shared_core.errors import ConfigError, EmbeddingError, PromptError

#: SHA-256 of the int8 ONNX graph shipped in the package (the shipped routers record it).
PACKAGED_SHA = json.loads((PACKAGED_DIR / "meta.json").read_text())["sha256"]


class CountingEmbedder(Embedder):
    """A hash embedder that records every batch it is asked to embed."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        self._inner = HashEmbedder(dim, seed)
        self.name = f"counting-{dim}-{seed}"
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return self._inner.dim

    def _embed(self, texts: list[str], show_progress: bool) -> np.ndarray:
        self.calls.append(list(texts))
        return self._inner.embed(texts)

    def to_config(self) -> dict[str, Any]:
        return {"type": "counting", "name": self.name, "dim": self.dim}


# --- the cache --------------------------------------------------------------


def test_cache_hits_do_not_call_inner(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    first = cached.embed(["a b", "c", "a b"])
    assert inner.calls == [["a b", "c"]]  # misses only, deduplicated, one call
    again = cached.embed(["c", "a b"])
    assert len(inner.calls) == 1
    np.testing.assert_array_equal(again, first[[1, 0]])
    np.testing.assert_allclose(first, HashEmbedder(8, 0).embed(["a b", "c", "a b"]), atol=1e-6)
    cached.embed(["c", "new"])
    assert inner.calls[-1] == ["new"]


def test_cache_is_transparent(tmp_path: Path) -> None:
    inner = HashEmbedder(16, 3)
    cached = CachedEmbedder(inner, tmp_path)
    assert (cached.name, cached.dim, cached.to_config()) == (inner.name, inner.dim, inner.to_config())


def test_cache_is_keyed_by_embedder(tmp_path: Path) -> None:
    a, b = CountingEmbedder(seed=1), CountingEmbedder(seed=2)
    va = CachedEmbedder(a, tmp_path).embed(["same text"])
    vb = CachedEmbedder(b, tmp_path).embed(["same text"])
    assert len(a.calls) == len(b.calls) == 1
    assert not np.allclose(va, vb)
    assert EmbeddingCache(tmp_path).count() == 2


def test_cache_shared_between_instances(tmp_path: Path) -> None:
    CachedEmbedder(CountingEmbedder(), tmp_path).embed(["x", "y"])
    fresh = CountingEmbedder()
    CachedEmbedder(fresh, tmp_path).embed(["y", "x"])
    assert fresh.calls == []


def test_cache_concurrent_writers(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            CachedEmbedder(HashEmbedder(8), tmp_path).embed([f"t{i}" for i in range(k, k + 50)])
        except BaseException as exc:  # noqa: BLE001 - collected and re-checked below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 25, 50, 75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert EmbeddingCache(tmp_path).count() == 125


def test_cache_refuses_package_dir() -> None:
    package = Path(shared_core.__file__).resolve().parent
    with pytest.raises(ConfigError, match="inside the installed package"):
        CachedEmbedder(HashEmbedder(), package / "cache")
    with pytest.raises(ConfigError, match="inside the installed package"):
        check_cache_dir(package)


def test_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    CachedEmbedder(HashEmbedder()).embed(["hello"])
    assert (tmp_path / "c" / "embeddings.sqlite3").is_file()
    monkeypatch.delenv("ROUTELLM_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "routellm"


def test_space_key_depends_on_config() -> None:
    assert space_key({"a": 1, "b": 2}) == space_key({"b": 2, "a": 1})
    assert space_key(HashEmbedder(8, 0).to_config()) != space_key(HashEmbedder(8, 1).to_config())


# --- settings -----------------------------------------------------------------


def test_get_embedder_specs() -> None:
    assert get_embedder(None).name == DEFAULT_MODEL + ":onnx-int8"  # the packaged int8 graph
    assert get_embedder("minilm").name == DEFAULT_MODEL
    assert get_embedder(DEFAULT_MODEL).is_default
    openai = get_embedder("openai:text-embedding-3-small")
    assert isinstance(openai, OpenAICompatibleEmbedder) and openai.dim == 1536
    assert get_embedder("hash-8-2").to_config() == HashEmbedder(8, 2).to_config()
    emb = HashEmbedder()
    assert get_embedder(emb) is emb


def test_default_embedder_is_lazy() -> None:
    emb = SentenceTransformerEmbedder()
    assert emb._model.value is None
    assert emb.to_config() == {"type": "sentence-transformers", "name": DEFAULT_MODEL, "dim": DEFAULT_DIM}
    assert emb._model.value is None


@pytest.mark.parametrize(
    "cfg",
    [
        HashEmbedder(12, 4).to_config(),
        {"type": "sentence-transformers", "name": DEFAULT_MODEL + ":max128", "dim": 384, "max_seq_length": 128},
        {"type": "onnx", "name": DEFAULT_MODEL + ":onnx-int8", "dim": 384, "quantize": "int8", "sha256": PACKAGED_SHA},
        {"type": "sentence-transformers", "name": DEFAULT_MODEL, "dim": 384},
        {"type": "openai", "name": "openai:text-embedding-3-large", "dim": 3072, "model": "text-embedding-3-large",
         "base_url": "https://api.openai.com/v1"},
    ],
)
def test_config_round_trip(cfg: dict[str, Any]) -> None:
    assert embedder_from_config(cfg, allow_remote=True).to_config() == cfg


def test_config_never_chooses_a_remote_endpoint() -> None:
    """A saved router's config.json naming a URL does not make prompts go there."""
    cfg = {"type": "openai", "name": "openai:evil", "dim": 4, "model": "evil", "base_url": "http://collector.example/v1"}
    with pytest.raises(ConfigError, match="sends every prompt to 'http://collector.example/v1'"):
        embedder_from_config(cfg)


def test_unknown_config_type_named() -> None:
    with pytest.raises(ConfigError, match="'word2vec'"):
        embedder_from_config({"type": "word2vec", "name": "x", "dim": 3})


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (42, ConfigError, "42"),
        ("", ConfigError, "''"),
        ("openai:", ConfigError, "'openai:'"),
        ("./no/such/model-dir", EmbeddingError, "no/such/model-dir"),
    ],
)
def test_bad_specs_named(spec: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        get_embedder(spec)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": True}, {"device": ""}, {"max_seq_length": -1}])
def test_bad_sentence_transformer_settings(kwargs: dict[str, Any]) -> None:
    value = next(iter(kwargs.values()))
    with pytest.raises(ConfigError, match=repr(value)):
        SentenceTransformerEmbedder(**kwargs)


@pytest.mark.slow  # imports sentence-transformers (~5 s)
def test_unknown_model_name_fails_offline_with_name() -> None:
    emb = SentenceTransformerEmbedder("nobody/no-such-model-xyz")
    with pytest.raises(EmbeddingError, match="nobody/no-such-model-xyz"):
        emb.embed(["hello"])


def test_non_string_text_named() -> None:
    with pytest.raises(ConfigError, match=r"texts\[1\]"):
        HashEmbedder().embed(["ok", 3])


# --- OpenAI-compatible embedder against a stand-in server on 127.0.0.1 -------


class _StandIn(BaseHTTPRequestHandler):
    """Answers POST /v1/embeddings like OpenAI: vector = (len, words, 1, index-in-batch)."""

    requests: list[dict[str, Any]] = []
    mode = "ok"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.mode == "error":
            self._send(500, b'{"error": "boom"}')
            return
        if self.mode == "garbage":
            self._send(200, b'{"nope": []}')
            return
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), float(len(t.split())), 1.0, float(i)]}
            for i, t in enumerate(body["input"])
        ]
        data.reverse()  # servers may answer out of order; the index decides
        self._send(200, json.dumps({"object": "list", "data": data, "model": body["model"]}).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Any:
    _StandIn.requests = []
    _StandIn.mode = "ok"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", _StandIn
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_request_body_and_batching(stand_in: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = stand_in
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    emb = OpenAICompatibleEmbedder("local-embed", base_url=url + "/", api_key="sk-test", dim=4, batch_size=2)
    texts = ["a", "bb cc", "ddd", "e e e e", "fffff"]
    out = emb.embed(texts)
    assert [r["path"] for r in handler.requests] == ["/v1/embeddings"] * 3
    assert [r["body"] for r in handler.requests] == [
        {"model": "local-embed", "input": ["a", "bb cc"]},
        {"model": "local-embed", "input": ["ddd", "e e e e"]},
        {"model": "local-embed", "input": ["fffff"]},
    ]
    assert {r["auth"] for r in handler.requests} == {"Bearer sk-test"}
    expected = np.array([[len(t), len(t.split()), 1.0, i % 2] for i, t in enumerate(texts)], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert emb.name == "openai:local-embed"
    assert emb.to_config() == {"type": "openai", "name": "openai:local-embed", "dim": 4, "model": "local-embed",
                               "base_url": url}


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_probes_dim_once_and_keeps_the_env_key_for_openai(stand_in: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = stand_in
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    emb = OpenAICompatibleEmbedder("local-embed", base_url=url)
    assert handler.requests == []  # the constructor does no I/O
    assert emb.dim == 4 and emb.dim == 4
    # $OPENAI_API_KEY is OpenAI's: it is never sent to another server
    assert len(handler.requests) == 1 and handler.requests[0]["auth"] is None
    OpenAICompatibleEmbedder("local-embed", base_url=url, api_key="sk-given").embed(["x"])
    assert handler.requests[-1]["auth"] == "Bearer sk-given"  # a key given with the URL goes to it


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_asks_for_shortened_vectors(stand_in: Any) -> None:
    url, handler = stand_in
    emb = OpenAICompatibleEmbedder("text-embedding-3-small", base_url=url, dim=4)
    emb.embed(["hello"])
    assert handler.requests[0]["body"] == {"model": "text-embedding-3-small", "input": ["hello"], "dimensions": 4}


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_http_error_names_url_and_status(stand_in: Any) -> None:
    url, handler = stand_in
    handler.mode = "error"
    emb = OpenAICompatibleEmbedder("local-embed", base_url=url, dim=4)
    with pytest.raises(EmbeddingError, match=rf"{url}/embeddings returned HTTP 500"):
        emb.embed(["x"])


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_bad_response_named(stand_in: Any) -> None:
    url, handler = stand_in
    handler.mode = "garbage"
    with pytest.raises(EmbeddingError, match="not OpenAI's format"):
        OpenAICompatibleEmbedder("local-embed", base_url=url, dim=4).embed(["x"])


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_dim_mismatch_named(stand_in: Any) -> None:
    url, _ = stand_in
    with pytest.raises(EmbeddingError, match="expected 8"):
        OpenAICompatibleEmbedder("local-embed", base_url=url, dim=8).embed(["x"])


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_openai_unreachable_server_names_url() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EmbeddingError, match=rf"request to {url}/embeddings failed"):
        OpenAICompatibleEmbedder("m", base_url=url, dim=4, timeout=2).embed(["x"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": ""}, "''"),
        ({"model": "m", "base_url": "api.openai.com"}, "'api.openai.com'"),
        ({"model": "m", "dim": 0}, "0"),
        ({"model": "m", "batch_size": -2}, "-2"),
        ({"model": "m", "timeout": 0}, "0"),
    ],
)
def test_openai_bad_settings_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OpenAICompatibleEmbedder(**kwargs)


# --- the real all-MiniLM-L6-v2 ---------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(batch_size=2).load()


@pytest.mark.slow
def test_minilm_shape_norm_and_order(minilm: SentenceTransformerEmbedder) -> None:
    texts = [
        "What is the derivative of x squared with respect to x?",
        "hi",
        "Explain, step by step and with a worked example, how public-key cryptography lets two strangers agree on a secret.",
        "The cat sat on the mat.",
        "How do I differentiate x^2?",
    ]
    out = minilm.embed(texts)
    assert out.shape == (5, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Length sorting into batches of 2 must not reorder rows: each row equals the text embedded alone.
    alone = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(out, alone, atol=1e-5)
    sims = out @ out.T
    assert sims[0, 4] > sims[0, 3] + 0.3  # the two derivative questions are close; the cat is not
    assert sims[0, 4] == pytest.approx(0.80, abs=0.1)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm: SentenceTransformerEmbedder) -> None:
    texts = ["Paris is the capital of France.", "Solve 2x + 3 = 7 for x."]
    reference = minilm.model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.embed(texts), reference, atol=1e-5)


@pytest.mark.slow
def test_minilm_named_by_hub_id_is_the_same_space(minilm: SentenceTransformerEmbedder) -> None:
    other = get_embedder("sentence-transformers/all-MiniLM-L6-v2")
    assert other.to_config() == minilm.to_config()
    np.testing.assert_allclose(other.embed(["same space"]), minilm.embed(["same space"]), atol=1e-6)


@pytest.mark.slow
def test_minilm_local_path(minilm: SentenceTransformerEmbedder) -> None:
    from shared_core.embeddings import default_model_path

    by_path = SentenceTransformerEmbedder(default_model_path())
    assert by_path.name == str(default_model_path()) and by_path.dim == 384
    assert by_path.to_config()["model"] == str(default_model_path())
    np.testing.assert_allclose(by_path.embed(["a path"]), minilm.embed(["a path"]), atol=1e-6)


@pytest.mark.slow
def test_minilm_through_cache(minilm: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    cached = CachedEmbedder(minilm, tmp_path)
    first = cached.embed(["cached text", "another"])
    np.testing.assert_array_equal(cached.embed(["another", "cached text"]), first[[1, 0]])
    assert cached.cache.count(cached.space) == 2


# --- ONNX Runtime ------------------------------------------------------------------


def test_onnx_settings_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'int4'"):
        OnnxEmbedder(quantize="int4", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="inside the installed package"):
        OnnxEmbedder(cache_dir=Path(shared_core.__file__).parent / "onnx")
    with pytest.raises(ConfigError, match="sha256 must be 64 lower-case hex digits, got 'abc'"):
        OnnxEmbedder(quantize="int8", sha256="abc")
    assert OnnxEmbedder(cache_dir=tmp_path).name == DEFAULT_MODEL  # fp32: the same space
    assert get_embedder("minilm-onnx-int8").name == DEFAULT_MODEL + ":onnx-int8"  # int8: its own


def test_packaged_int8_needs_no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*args: Any) -> None:
        raise AssertionError("the packaged embedder was exported")

    monkeypatch.setattr(onnx_runtime, "_write_export", no_export)
    emb = OnnxEmbedder(quantize="int8")
    assert emb.model_dir() == PACKAGED_DIR
    out = emb.embed(["What is the capital of France?", "hi"])
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert emb.to_config()["sha256"] == PACKAGED_SHA == onnx_runtime.file_sha256(PACKAGED_DIR / "model.onnx")


def test_packaged_int8_routes_without_torch() -> None:
    code = (
        "import sys; from shared_core.engine import resolve_router;"
        "print(resolve_router('default').score(['Prove that sqrt(2) is irrational.'])[0]);"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'pandas', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert 0.0 <= float(out[0]) <= 1.0
    assert out[1] == "[]"


def test_a_text_alone_runs_on_every_core_and_gets_its_batch_vector() -> None:
    # One text (a routing decision) has nothing to run beside it: it gets a session with one intra-op
    # thread per worker; many texts run one a worker on one-thread sessions. The vectors are the same.
    emb = OnnxEmbedder(quantize="int8", workers=2)
    assert emb._solo_threads() == 2
    session, _, _, solo = emb._layered_parts((3,))
    assert (session.get_session_options().intra_op_num_threads, solo.get_session_options().intra_op_num_threads) == (1, 2)
    texts = ["What is the capital of France?", "hi", "Prove that there are infinitely many primes. " * 20,
             "Write a Python function that merges two sorted lists.", "x"]
    together, states = emb.embed_layers(texts, (3,))  # five batches: the one-thread session, two workers
    for i, text in enumerate(texts):
        alone, alone_states = emb.embed_layers([text], (3,))  # the solo session
        assert np.array_equal(alone[0], together[i]) and np.array_equal(alone_states[0], states[i])
        assert np.array_equal(emb.embed([text])[0], emb.embed(texts)[i])
    # no second session where it would be the same one, or where every core is already a thread
    for kwargs in ({"workers": 1}, {"workers": 2, "solo_threads": 1}, {"threads": None, "workers": 2}):
        assert OnnxEmbedder(quantize="int8", **kwargs)._solo_threads() is None
    with pytest.raises(ConfigError, match="solo_threads must be a positive integer, got 0"):
        OnnxEmbedder(quantize="int8", solo_threads=0)


def test_a_text_alone_shares_the_cores_while_another_call_runs() -> None:
    # Two threads each embedding one text would oversubscribe the cores on the solo session
    # (measured: 170-190 texts/s against 240-250 on the one-thread sessions): a text takes every
    # core only when no other ONNX embedding call of the process is in flight, of any embedder.
    import threading

    class Encoding:
        ids, attention_mask, type_ids = [1, 2], [1, 1], [0, 0]

    class Tokenizer:
        def encode_batch(self, batch):
            return [Encoding() for _ in batch]

    ran, started, release = [], threading.Event(), threading.Event()

    class Session:
        def __init__(self, name):
            self.name = name

        def run(self, _names, feed):
            ran.append(self.name)
            if self.name == "regular" and not started.is_set():  # the first call holds on until told
                started.set()
                release.wait(5)
            return [np.ones((len(feed["input_ids"]), 4), dtype=np.float32)]

    emb = OnnxEmbedder(quantize="int8", workers=1, solo_threads=2)
    parts = (Session("regular"), Tokenizer(), {"dim": 4, "inputs": ["input_ids", "attention_mask"]}, Session("solo"))
    assert emb._run(parts, ["one text"], 0, False)[0].shape == (1, 4) and ran == ["solo"]
    ran.clear()
    other = OnnxEmbedder(quantize="int8", workers=1)  # another router's embedder holds the call in flight
    first = threading.Thread(target=other._run, args=(parts, ["a", "b"], 0, False))
    first.start()
    assert started.wait(5)
    emb._run(parts, ["alone, but not the only call"], 0, False)
    release.set()
    first.join(5)
    assert ran == ["regular", "regular", "regular"] and onnx_runtime._CALLS == [0]
    emb._run(parts, ["alone again"], 0, False)
    assert ran[-1] == "solo"


def test_sha256_mismatch_refused_at_load() -> None:
    emb = OnnxEmbedder(quantize="int8", sha256="0" * 64)
    with pytest.raises(EmbeddingError, match="the router was trained with the file of SHA-256 0000"):
        emb.embed(["x"])


def test_embedders_pickle_and_copy_without_their_model() -> None:
    emb = OnnxEmbedder(quantize="int8")
    first = emb.embed(["pickle me"])
    for clone in (pickle.loads(pickle.dumps(emb)), copy.deepcopy(emb)):
        assert clone._loaded.value is None  # the copy loads its own session
        np.testing.assert_array_equal(clone.embed(["pickle me"]), first)


def test_bad_unicode_names_the_text() -> None:
    emb = HashEmbedder()
    with pytest.raises(PromptError, match=r"texts\[1\] is not valid Unicode text: .*lone surrogate") as info:
        emb.embed(["fine", "bad \udc80 bytes"])
    assert info.value.index == 1


def test_long_text_is_capped_before_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    emb = HashEmbedder()
    inner = emb._embed
    monkeypatch.setattr(emb, "_embed", lambda texts, show: seen.extend(map(len, texts)) or inner(texts, show))
    emb.embed(["word " * 2_000_000, "short"])  # a 10 MB text
    assert seen == [MAX_TEXT_CHARS, 5]


def test_blas_limit_is_scoped() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    # The host application runs BLAS on 2 threads (scripts/test.sh exports OPENBLAS_NUM_THREADS=1,
    # which would make a cap of 1 invisible), and must get them back after each of our calls.
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and set(before) == {2}
        with blas_limit(1):
            assert set(blas_threads()) == {1}
            with blas_limit(1):  # nested calls share the scope
                pass
            assert set(blas_threads()) == {1}
        assert blas_threads() == before  # the host's setting is back
        OnnxEmbedder(quantize="int8").embed(["no lasting change"])
        assert blas_threads() == before


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("onnx-cache")
    OnnxEmbedder(cache_dir=directory).load()  # exports the fp32 graph once
    return directory


@pytest.mark.slow
def test_onnx_fp32_equals_torch(onnx_dir: Path, minilm: SentenceTransformerEmbedder) -> None:
    texts = ["short", "Which of these is a prime number? A) 4 B) 6 C) 7 D) 9", "word " * 400, "a b"]
    emb = OnnxEmbedder(cache_dir=onnx_dir, batch_size=2)
    out = emb.embed(texts)
    assert out.shape == (4, 384)
    np.testing.assert_allclose(out, minilm.embed(texts), atol=1e-5)  # incl. truncation at 256 tokens


@pytest.mark.slow
def test_onnx_int8_close_to_fp32(minilm: SentenceTransformerEmbedder) -> None:
    texts = [f"Question {i}: what is {i} times {i + 3}, and why does it matter for algebra?" for i in range(20)]
    emb = OnnxEmbedder(quantize="int8")
    cos = np.sum(emb.embed(texts) * minilm.embed(texts), axis=1)
    assert float(cos.mean()) == pytest.approx(0.99, abs=0.01)
    assert emb.to_config() == {"type": "onnx", "name": DEFAULT_MODEL + ":onnx-int8", "dim": 384, "quantize": "int8",
                               "sha256": PACKAGED_SHA}


@pytest.mark.slow
def test_onnx_export_reused_and_keyed_by_content(onnx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*args: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime, "_write_export", no_export)
    emb = OnnxEmbedder(cache_dir=onnx_dir)
    assert emb.embed(["reused"]).shape == (1, 384)
    digest = onnx_runtime.directory_sha256(onnx_runtime.default_model_path())
    assert emb.model_dir() == onnx_runtime.export_dir_for(emb.source, None, onnx_dir)
    assert emb.model_dir().parent == onnx_dir / "onnx" and digest  # named by the source files' hash


@pytest.mark.slow
def test_onnx_corrupt_export_is_made_again(tmp_path: Path) -> None:
    emb = OnnxEmbedder(cache_dir=tmp_path)
    directory = emb.model_dir()
    good = onnx_runtime.file_sha256(directory / "model.onnx")
    (directory / "model.onnx").write_bytes(b"garbage")
    again = OnnxEmbedder(cache_dir=tmp_path)
    assert again.embed(["exported again"]).shape == (1, 384)
    assert onnx_runtime.file_sha256(directory / "model.onnx") == good


@pytest.mark.slow
def test_onnx_read_only_cache_exports_privately(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def read_only(path: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(onnx_runtime, "_export_lock", read_only)
    emb = OnnxEmbedder(cache_dir=tmp_path)
    with caplog.at_level("WARNING"):
        assert emb.embed(["still routes"]).shape == (1, 384)
    assert "cannot write the ONNX export" in caplog.text
    assert tmp_path not in emb.model_dir().parents


@pytest.mark.slow
def test_onnx_concurrent_first_exports_both_succeed(tmp_path: Path) -> None:
    code = (
        "import sys; from shared_core.embeddings import OnnxEmbedder;"
        "print(OnnxEmbedder(cache_dir=sys.argv[1]).embed(['race'])[0, :3].tolist())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert results[0][0] == results[1][0]
    assert len(list((tmp_path / "onnx").glob("*/model.onnx"))) == 1


@pytest.mark.slow
def test_onnx_workers_keep_order() -> None:
    texts = [f"{'word ' * (i % 7)}text number {i}" for i in range(12)]
    one = OnnxEmbedder(quantize="int8", threads=1, workers=1).embed(texts)
    two = OnnxEmbedder(quantize="int8", threads=1, workers=2).embed(texts)
    np.testing.assert_allclose(two, one, atol=1e-5)
    with pytest.raises(ConfigError, match="workers must be a positive integer, got 0"):
        OnnxEmbedder(workers=0)


# --- model2vec static embeddings ---------------------------------------------------------


@pytest.fixture
def tiny_static(tmp_path: Path) -> Path:
    """A 6-word model2vec model built in place (a distilled one takes minutes)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "cat": 2, "dog": 3, "math": 4, "proof": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.random.default_rng(0).standard_normal((len(vocab), 6)).astype(np.float32)
    StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True).save_pretrained(str(tmp_path / "tiny"))
    return tmp_path / "tiny"


def test_model2vec_embedder(tiny_static: Path) -> None:
    emb = get_embedder(str(tiny_static))  # a model2vec directory is recognised by its config
    assert isinstance(emb, Model2VecEmbedder) and emb.name == "model2vec:tiny" and emb.dim == 6
    out = emb.embed(["cat dog", "math proof", "cat dog"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0], out[2])
    assert embedder_from_config(emb.to_config()).to_config() == emb.to_config()


def test_model2vec_missing_dir_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="no-model-here"):
        Model2VecEmbedder(tmp_path / "no-model-here")
