"""The chat corpus (chatterbot-corpus openings): its reader, the adaptive_ensemble_chat recipe, the reference set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared_core import datasets
from shared_core.embeddings import HashEmbedder
from shared_core.errors import DataError
from shared_core.routers import load_router

GREETINGS = """categories:
- greetings
conversations:
- - Hello
  - Hi
- - Hello
  - Greetings!
- - How are you doing?
  - Good.
"""
TRIVIA = """categories:
- trivia
conversations:
- - Who was the 37th President of the United States?
  - Richard Nixon
- - '1963'
- []
"""


def write_corpus(root, files=None):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {"greetings.yml": GREETINGS, "trivia.yml": TRIVIA}).items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_reader_keeps_each_conversation_opening_once_with_its_category(tmp_path):
    df = datasets.load_chat_corpus(write_corpus(tmp_path / "corpus"))
    assert df["prompt"].tolist() == ["Hello", "How are you doing?", "Who was the 37th President of the United States?", "1963"]
    assert df["category"].tolist() == ["greetings", "greetings", "trivia", "trivia"]


def test_reader_names_the_bad_file(tmp_path):
    with pytest.raises(DataError, match="no chat corpus files"):
        datasets.load_chat_corpus(tmp_path / "missing")
    bad = write_corpus(tmp_path / "bad", {"broken.yml": "conversations: [unclosed"})
    with pytest.raises(DataError, match="broken.yml.*not valid YAML"):
        datasets.load_chat_corpus(bad)
    odd = write_corpus(tmp_path / "odd", {"odd.yml": "categories: [x]\n"})
    with pytest.raises(DataError, match="odd.yml.*no 'conversations' list"):
        datasets.load_chat_corpus(odd)
    empty = write_corpus(tmp_path / "empty", {"e.yml": "conversations:\n- []\n- [1, 2]\n"})
    with pytest.raises(DataError, match="no conversation that starts with a text turn"):
        datasets.load_chat_corpus(empty)


def test_installed_corpus():
    pytest.importorskip("chatterbot_corpus")
    df = datasets.load_chat_corpus()
    assert len(df) == 748 and df["prompt"].is_unique
    assert {"greetings", "trivia", "coding"} <= set(df["category"])


READ = datasets.load_chat_corpus


@pytest.fixture()
def toy_data(tmp_path, monkeypatch):
    """The toy data directory of the irt tests, and the toy corpus in place of the installed one."""
    from tests.shared_core.test_irt import write_toy_data

    root = tmp_path / "data"
    root.mkdir()
    corpus = write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(datasets, "load_chat_corpus", lambda *a, **k: READ(corpus))
    return write_toy_data(root)


def test_recipe_adds_the_corpus_as_ties_and_drops_held_out_texts(toy_data, tmp_path):
    from shared_core.training.recipes import train_recipe

    router = train_recipe("adaptive_ensemble_chat", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False)
    assert router.training_["prompts"]["chat"] == 4
    assert router.training_["mean_label"]["chat"] == pytest.approx(0.5)
    assert "chatterbot-corpus" in router.training_["data"] and "an assumption, not a measured outcome" in router.training_["data"]
    assert router.source_weights == {"arena": 20.0, "chat": 8.0, "mmlu_pro": 0.3}
    # a chat opening whose text is a held-out arena prompt is not trained on
    toy = datasets.load_chat_corpus()
    extra = pd.concat([toy, pd.DataFrame({"prompt": ["arena task 3"], "category": ["x"]})], ignore_index=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "load_chat_corpus", lambda *a, **k: extra)
        kept = train_recipe("adaptive_ensemble_chat", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False)
        held = train_recipe("adaptive_ensemble_chat", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False,
                            exclude_questions={"arena": ["q3"]})
    assert (kept.training_["prompts"]["chat"], held.training_["prompts"]["chat"]) == (5, 4)
    # save / load round trip keeps the chat bank and the scores
    path = router.save(tmp_path / "chat_router")
    loaded = load_router(path, embedder=HashEmbedder(dim=32))
    prompts = ["Hello", "prove the theorem about primes", "arena task 1"]
    assert loaded.sources_ == router.sources_ and "chat" in loaded.sources_
    np.testing.assert_allclose(loaded.score(prompts), router.score(prompts), atol=1e-6)


def test_reference_prompts_mix_arena_and_corpus_and_fall_back_without_it(toy_data, monkeypatch):
    from shared_core.training import recipes

    mixed = recipes.reference_prompts(toy_data)
    assert mixed[:20] == [f"arena task {i}" for i in range(20)]
    assert sorted(mixed[20:]) == sorted(datasets.load_chat_corpus()["prompt"])  # 4 < 300: all of them

    def missing(*a, **k):
        raise DataError("the chat corpus needs the chatterbot-corpus package")

    monkeypatch.setattr(datasets, "load_chat_corpus", missing)
    assert recipes.reference_prompts(toy_data) == [f"arena task {i}" for i in range(20)]



def test_mm_recipe_fits_a_difficulty_head_on_every_models_outcomes_and_drops_held_out(toy_data, tmp_path):
    from shared_core.training.adaptive_ensemble import difficulty_frame
    from shared_core.training.recipes import RecipeData, train_recipe

    frame = difficulty_frame(RecipeData(toy_data, embedder=None, progress=False))
    assert set(frame["source"]) == {"mmlu", "arena", "mmlu_pro", "chat"}
    arena = frame[frame["source"] == "arena"].set_index("prompt")["difficulty"]
    # three models graded 9/6/3 (even tasks) and 10/7/4 (odd): 1 - mean((grade - 1) / 9)
    assert arena["arena task 0"] == pytest.approx(1 - (8 + 5 + 2) / 27, abs=1e-12)
    assert arena["arena task 1"] == pytest.approx(1 - (9 + 6 + 3) / 27, abs=1e-12)
    mmlu = frame[frame["source"] == "mmlu"].set_index("prompt")["difficulty"]
    assert set(mmlu.round(6)) <= {0.0, 0.5}  # the strong model is always right here, the weak one on even questions
    assert (frame.loc[frame["source"] == "chat", "difficulty"] == 0).all()
    assert frame["difficulty"].between(0, 1).all()
    held = difficulty_frame(RecipeData(toy_data, embedder=None, progress=False,
                                       exclude_questions={"arena": ["q3"], "mmlu_pro": ["70"]}))
    assert "arena task 3" not in set(held["prompt"]) and len(held) == len(frame) - 2

    from shared_core.routers.adaptive_ensemble import AdaptiveEnsembleRouter

    seen = []
    fit = AdaptiveEnsembleRouter.fit_difficulty
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AdaptiveEnsembleRouter, "fit_difficulty",
                   lambda self, frame, reference, **kw: seen.append(list(reference)) or fit(self, frame, reference, **kw))
        train_recipe("adaptive_ensemble_mm", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False,
                     exclude_questions={"arena": ["q3"]})
    assert "arena task 2" in seen[0] and "arena task 3" not in seen[0]  # nor is a held-out prompt in its scale
    router = train_recipe("adaptive_ensemble_mm", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False)
    assert router.difficulty_blend == pytest.approx(0.2) and router.difficulty_scale_ > 0
    assert router.training_["difficulty"]["prompts"] == frame["source"].value_counts().sort_index().to_dict()
    assert "difficulty head on every model's outcomes" in router.training_["data"]
    path = router.save(tmp_path / "mm")
    loaded = load_router(path, embedder=HashEmbedder(dim=32))
    prompts = ["Hello", "prove the theorem about primes", "arena task 1"]
    assert loaded.difficulty_blend == pytest.approx(0.2)
    np.testing.assert_allclose(loaded.score(prompts), router.score(prompts), atol=1e-6)


def test_l3_recipe_reads_layer_three_at_its_blend(toy_data, tmp_path):
    from shared_core.training.recipes import train_recipe

    router = train_recipe("adaptive_ensemble_l3", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False)
    assert router.embedding_layers == (3,) and router.difficulty_blend == pytest.approx(0.45)
    assert router.difficulty_coef_.shape == (32,)
    assert router.training_["difficulty"]["input"] == "mean token states of the embedder's layers [3]"
    mm = train_recipe("adaptive_ensemble_mm", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False)
    prompts = ["Hello", "prove the theorem about primes", "arena task 1"]
    assert not np.allclose(router.score(prompts), mm.score(prompts))  # another head, not the mm one
    loaded = load_router(router.save(tmp_path / "l3"), embedder=HashEmbedder(dim=32))
    assert loaded.embedding_layers == (3,)
    # trained by its recipe's name, it answers to that name, saved and loaded, not to its kind
    assert (router.label, loaded.label, loaded.name) == ("adaptive_ensemble_l3",) * 2 + ("adaptive_ensemble",)
    np.testing.assert_allclose(loaded.score(prompts), router.score(prompts), atol=1e-6)
    # a training option sets the layers, as the blend and the penalty
    two = train_recipe("adaptive_ensemble_l3", data_dir=toy_data, embedder=HashEmbedder(dim=32), progress=False,
                       options={"difficulty_layers": [2, 4]})
    assert two.embedding_layers == (2, 4) and two.difficulty_coef_.shape == (64,)
