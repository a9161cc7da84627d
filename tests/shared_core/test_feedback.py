"""Feedback: outcomes, the append-only store, the FeedbackRouter (online, refit, saved)
and record_feedback through the engine and both integrations (offline, sockets off)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared_core.embeddings import HashEmbedder
from shared_core.engine import RoutingEngine, decision_record, resolve_router
from shared_core.errors import ArtifactError, ConfigError
from shared_core.feedback import (
    FeedbackRecord, FeedbackStore, FeedbackWarning, is_decision_id, outcome_label, record_feedback,
)
from shared_core.routers import Role, load_router
from shared_core.routers.feedback import FeedbackRouter
from shared_core.routers.knn import KNNRouter

MATHS = "prove the theorem about prime numbers"
NEAR = "prove the theorem about prime numbers again"
FAR = "say hi to grandma"


@pytest.fixture
def base():
    labelled = pd.DataFrame({
        "prompt": ["prove the theorem", "say hi", "solve the integral", "tell a joke", "write a poem", "hello"],
        "label": [0.5] * 6, "source": "demo",
    })
    return KNNRouter(HashEmbedder(), banks={"demo": {"k": 3}}, progress=False).fit(labelled)


@pytest.fixture
def store(tmp_path):
    return FeedbackStore(tmp_path / "fb.jsonl")


# Outcomes --------------------------------------------------------------------------------
@pytest.mark.parametrize("outcome, label", [("weak_ok", 0.0), ("weak_failed", 1.0), ("strong", 1.0),
                                            ("weak", 0.0), ("tie", 0.5), (0.25, 0.25), (1, 1.0)])
def test_outcome_labels(outcome, label):
    assert outcome_label(outcome) == pytest.approx(label, abs=0)


@pytest.mark.parametrize("bad, match", [(True, "ambiguous"), ("good", "unknown feedback outcome 'good'"),
                                        (1.5, "got 1.5"), (float("nan"), "got nan"), (None, "got None")])
def test_bad_outcomes_name_the_value(bad, match):
    with pytest.raises(ConfigError, match=match):
        outcome_label(bad)


# The store -------------------------------------------------------------------------------
def test_store_round_trip_and_default_location(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    store = FeedbackStore()
    assert store.path == (tmp_path / "cache" / "feedback.jsonl").resolve()
    assert store.read() == [] and not store.path.exists()  # nothing created before the first write
    records = [FeedbackRecord("q1", 1.0, "weak_failed", "dec_" + "a" * 24, "knn", 0.4, 1.0),
               FeedbackRecord("q2 ünïcode", 0.5, 0.5)]
    store.append(records)
    assert FeedbackStore(tmp_path / "cache").read() == records  # a directory means its feedback.jsonl


def test_store_refuses_the_installed_package():
    import shared_core

    with pytest.raises(ConfigError, match="inside the installed package"):
        FeedbackStore(Path(shared_core.__file__).parent / "feedback.jsonl")


def test_store_skips_a_torn_line_with_a_warning(store):
    store.append([FeedbackRecord("q1", 0.0, "weak_ok")])
    with open(store.path, "a", encoding="utf-8") as fh:
        fh.write('{"prompt": "cut sh')
    with pytest.warns(FeedbackWarning, match="line 2"):
        assert [r.prompt for r in store.read()] == ["q1"]


def test_concurrent_appends_from_threads_never_interleave(store):
    def write(t):
        for i in range(50):
            FeedbackStore(store.path).append([FeedbackRecord(f"thread {t} prompt {i} " + "x" * 500, 1.0, "strong")])

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = store.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 400
    assert len({json.loads(line)["prompt"] for line in lines}) == 400


def _append_many(path: str, worker: int) -> None:
    store = FeedbackStore(path)
    for i in range(100):
        store.append([FeedbackRecord(f"process {worker} prompt {i} " + "y" * 3000, 0.0, "weak")])


def test_concurrent_appends_from_processes_never_interleave(store):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(store.path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    records = store.read()
    assert len(records) == 300 and len({r.prompt for r in records}) == 300


# The router ----------------------------------------------------------------------------
def test_online_update_moves_near_prompts_and_leaves_the_base_untouched(base):
    tensors = {k: v.copy() for k, v in base.tensors().items()}
    embedder = base.embedder
    before = base.score([MATHS, NEAR, FAR])
    router = FeedbackRouter(base)
    assert router.score([MATHS, NEAR, FAR]) == pytest.approx(before, abs=1e-12)  # no feedback: the base
    router.add([MATHS] * 3, ["weak_failed"] * 3)
    after = router.score([MATHS, NEAR, FAR])
    assert after[0] > before[0] + 0.2 and after[1] > before[1] + 0.1
    assert abs(after[2] - before[2]) < abs(after[1] - before[1]) / 5
    assert router.n_feedback == 3
    # the base router (a shared object) is as it was
    assert base.embedder is embedder
    assert base.score([MATHS, NEAR, FAR]) == pytest.approx(before, abs=0)
    for k, v in base.tensors().items():
        np.testing.assert_array_equal(v, tensors[k])


def test_weak_ok_feedback_lowers_scores(base):
    router = FeedbackRouter(base).add([MATHS] * 3, ["weak_ok"] * 3)
    assert router.score([MATHS])[0] < base.score([MATHS])[0] - 0.2


def test_the_shipped_default_is_never_changed_by_feedback():
    shipped = resolve_router("default")
    prompts = ["What is 2 + 2?", "Prove that there are infinitely many primes."]
    before = shipped.score(prompts)
    router = FeedbackRouter(shipped).add([prompts[0]] * 5, ["weak_failed"] * 5)
    assert router.score(prompts)[0] > before[0] + 0.1  # default adaptive_ensemble_pro: +0.18
    assert resolve_router("default") is shipped
    assert shipped.score(prompts) == pytest.approx(before, abs=0)
    assert type(shipped.embedder).__name__ != "_ReusedEmbeddings"


def test_the_prompt_is_embedded_once_per_call(base):
    calls = []
    inner = base.embedder._embed

    def counting(texts, show_progress):
        calls.append(list(texts))
        return inner(texts, show_progress)

    base.embedder._embed = counting
    router = FeedbackRouter(base).add([MATHS], ["strong"])
    calls.clear()
    router.score([NEAR, FAR])
    assert calls == [[NEAR, FAR]]


def test_concurrent_adds_lose_nothing(base):
    router = FeedbackRouter(base)
    threads = [threading.Thread(target=router.add, args=([f"prompt {i}"] * 5, ["tie"] * 5)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.n_feedback == 40


def test_bad_arguments_fail_early(base):
    with pytest.raises(ConfigError, match="base must be a Router"):
        FeedbackRouter("default")
    with pytest.raises(ConfigError, match="temperature must be a number > 0, got 0"):
        FeedbackRouter(base, temperature=0)
    with pytest.raises(ConfigError, match="already a FeedbackRouter"):
        FeedbackRouter(FeedbackRouter(base))
    with pytest.raises(ConfigError, match="2 prompts but 1 labels"):
        FeedbackRouter(base).add(["a", "b"], ["tie"])
    with pytest.raises(ConfigError, match="no store"):
        FeedbackRouter(base).record(MATHS, "tie")


def test_record_then_refit_from_the_store(base, store):
    writer = FeedbackRouter(base, store)
    writer.record(MATHS, "weak_failed")
    writer.record(FAR, "weak_ok")
    FeedbackStore(store.path).append([FeedbackRecord(NEAR, 1.0, "strong")])  # another process, say
    reader = FeedbackRouter.from_store(base, store.path)
    assert reader.n_feedback == 3
    online = FeedbackRouter(base).add([MATHS, FAR, NEAR], [1.0, 0.0, 1.0])
    assert reader.score([MATHS, NEAR, FAR]) == pytest.approx(online.score([MATHS, NEAR, FAR]), abs=1e-9)
    assert writer.refit().n_feedback == 3


@pytest.mark.parametrize("head_alpha", [None, 10.0])
def test_save_and_load_round_trip(base, tmp_path, head_alpha):
    router = FeedbackRouter(base, head_alpha=head_alpha, k=5).add([MATHS, FAR, "x y z"], ["strong", "weak", "tie"])
    path = router.save(tmp_path / "fb")
    assert sorted(p.name for p in path.iterdir()) == ["base", "config.json", "model.safetensors"]
    loaded = load_router(path)
    assert isinstance(loaded, FeedbackRouter) and loaded.n_feedback == 3 and loaded.k == 5
    prompts = [MATHS, NEAR, FAR, "something else entirely"]
    assert loaded.score(prompts) == pytest.approx(router.score(prompts), abs=1e-6)
    assert FeedbackRouter(base).save(tmp_path / "empty") and load_router(tmp_path / "empty").n_feedback == 0


def test_load_refuses_a_bad_artifact(base, tmp_path):
    path = FeedbackRouter(base).add([MATHS], ["tie"]).save(tmp_path / "fb")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "feedback_prompts": 2}))
    with pytest.raises(ArtifactError, match="'embeddings'.*shape"):
        load_router(path)
    (path / "config.json").write_text(json.dumps({**config, "temperature": -1}))
    with pytest.raises(ArtifactError, match="temperature must be a number > 0"):
        load_router(path)


# record_feedback through the engine --------------------------------------------------------
def test_decisions_have_ids_in_their_record(base):
    engine = RoutingEngine(base, 0.5)
    a, b = engine.decide_texts([MATHS, MATHS])
    assert is_decision_id(a.id) and a.id != b.id and a == b  # ids are not compared
    assert decision_record(a, Role.STRONG, "big")["id"] == a.id
    assert "id" not in a.to_dict()


def test_record_feedback_by_id_decision_or_prompt(base, store):
    router = FeedbackRouter(base, store)
    engine = RoutingEngine(router, 0.5)
    decision = engine.decide_one([("user", MATHS)])
    before = decision.score
    rec = engine.record_feedback(decision.id, "weak_failed")
    assert (rec.prompt, rec.label, rec.decision_id, rec.router, rec.score) == (MATHS, 1.0, decision.id, "feedback",
                                                                               before)
    engine.record_feedback(decision, "strong")
    engine.record_feedback(NEAR, 0.9)
    assert [r.prompt for r in store.read()] == [MATHS, MATHS, NEAR]
    assert router.n_feedback == 3 and engine.decide_one([("user", MATHS)]).score > before + 0.2


def test_record_feedback_with_a_plain_router_only_persists(base, store):
    engine = RoutingEngine(base, 0.5)
    decision = engine.decide_one([("user", MATHS)])
    record_feedback(engine, decision.id, "weak_ok", store=store)
    assert [(r.prompt, r.label) for r in store.read()] == [(MATHS, 0.0)]
    assert engine.decide_one([("user", MATHS)]).score == pytest.approx(decision.score, abs=0)


def test_record_feedback_errors(base, store):
    engine = RoutingEngine(base, 0.5)
    with pytest.raises(ConfigError, match="decision 'dec_000000000000000000000000' is not among"):
        engine.record_feedback("dec_" + "0" * 24, "tie", store=store)
    no_text = engine.decide_one([("user", "")])
    assert no_text.score is None
    with pytest.raises(ConfigError, match="cannot be learned from"):
        engine.record_feedback(no_text, "tie", store=store)
    with pytest.raises(ConfigError, match="empty or blank"):
        engine.record_feedback("  ", "tie", store=store)
    with pytest.raises(ConfigError, match="unknown feedback outcome"):
        engine.record_feedback(MATHS, "meh", store=store)
    assert store.read() == []


# Both integrations -------------------------------------------------------------------------
def test_langchain_record_feedback(base, store):
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from langchain_routellm import DECISION_KEY, RouteLLMChat

    router = FeedbackRouter(base, store)
    llm = RouteLLMChat(strong=FakeListChatModel(responses=["strong"]), weak=FakeListChatModel(responses=["weak"]),
                       router=router, threshold=0.9)
    before = llm.route(MATHS).score
    record = llm.invoke(MATHS).response_metadata[DECISION_KEY]
    assert record["model"] and is_decision_id(record["id"])
    llm.record_feedback(record["id"], "weak_failed")
    assert [(r.prompt, r.decision_id) for r in store.read()] == [(MATHS, record["id"])]
    # one label at similarity 1 against the base's prior weight of 2
    assert llm.route(MATHS).score == pytest.approx((2 * before + 1.0) / 3, abs=1e-6)


def test_llamaindex_record_feedback(base, store):
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.llms import MockLLM

    from llamaindex_routellm import RouteLLM

    router = FeedbackRouter(base, store)
    llm = RouteLLM(strong=MockLLM(), weak=MockLLM(), router=router, threshold=0.9)
    before = llm.route(MATHS).score
    response = llm.chat([ChatMessage(role="user", content=MATHS)])
    decision_id = response.additional_kwargs["routellm"]["id"]
    assert decision_id == llm.last_decision.id
    llm.record_feedback(decision_id, "weak_failed")
    assert [r.decision_id for r in store.read()] == [decision_id]
    # one label at similarity 1 against the base's prior weight of 2
    assert llm.route(MATHS).score == pytest.approx((2 * before + 1.0) / 3, abs=1e-6)


def test_decision_log_keeps_only_what_a_router_reads():
    """A 10 MB prompt is not held in memory for feedback: only the characters a router reads are."""
    from shared_core.feedback import DecisionLog
    from shared_core.routers.base import MAX_PROMPT_CHARS

    log = DecisionLog(maxlen=2)
    log.add("dec_a", "word " * 2_000_000, 0.5)
    text, score = log.get("dec_a")
    assert len(text) == MAX_PROMPT_CHARS and text == ("word " * 2_000_000)[:MAX_PROMPT_CHARS] and score == 0.5
