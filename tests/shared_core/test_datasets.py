"""Readers of the router data directory, on the real data when it is present."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from shared_core import datasets
from shared_core.datasets import (
    STRONG_MODEL,
    WEAK_MODEL,
    contaminated_prompts,
    default_data_dir,
    drop_contaminated,
    load_arena_bench,
    load_commercial_mt_bench,
    load_gsm8k,
    load_mmlu,
    load_mt_bench,
    mmlu_split,
)
from shared_core.errors import DataError

try:
    DATA_DIR = default_data_dir()
except DataError as exc:  # pragma: no cover - depends on the machine
    DATA_DIR = None
    _WHY = str(exc)

needs_data = pytest.mark.skipif(DATA_DIR is None, reason="router data directory ../shared/data not found")


# --- no data needed --------------------------------------------------------
def test_mmlu_split_follows_the_hash_rule():
    for prompt in ["", "What is 2+2?", "héllo wörld", "x" * 1000]:
        first = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[0]
        assert mmlu_split(prompt) == ("test" if first in "01234567" else "train")
    # digest of "" starts with "e" -> train; of "a" starts with "c" -> train; of "b" with "3" -> test
    assert mmlu_split("") == "train"
    assert mmlu_split("b") == "test"


def test_mmlu_split_rejects_non_strings():
    with pytest.raises(DataError, match="string"):
        mmlu_split(None)


def test_data_dir_env_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataError, match="ROUTELLM_DATA_DIR"):
        default_data_dir()
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()


def test_missing_files_raise_data_error_naming_the_path(tmp_path):
    with pytest.raises(DataError, match="mt_bench"):
        load_mt_bench(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_gsm8k(tmp_path / "missing")


def test_unknown_contamination_benchmark():
    with pytest.raises(DataError, match="arena"):
        contaminated_prompts("arena-bench", ".")


def test_arena_bench_reader_uses_the_model_field(tmp_path):
    root = tmp_path / "arena-bench-v1"
    (root / "model_judgment").mkdir(parents=True)
    qs = [{"question_id": "a", "turns": ["first"]}, {"question_id": "b", "turns": ["second"]}]
    (root / "question.jsonl").write_text("\n".join(json.dumps(q) for q in qs) + "\n")
    judged = {
        "gpt-4-turbo.jsonl": (STRONG_MODEL, [9, None]),
        "Mixtral.jsonl": (WEAK_MODEL, ["7.0", 3.5]),
    }
    for fname, (model, scores) in judged.items():
        lines = [json.dumps({"question_id": q, "model": model, "score": s}) for q, s in zip("ab", scores)]
        (root / "model_judgment" / fname).write_text("\n".join(lines) + "\n")
    df = load_arena_bench(tmp_path)
    assert list(df["prompt"]) == ["first", "second"]
    assert df[STRONG_MODEL].iloc[0] == 9.0 and np.isnan(df[STRONG_MODEL].iloc[1])
    assert list(df[WEAK_MODEL]) == [7.0, 3.5]


# --- the real data ---------------------------------------------------------
@needs_data
def test_mmlu_matches_the_data_readme():
    df = load_mmlu(DATA_DIR)
    assert len(df) == 14042
    assert df["subject"].nunique() == 57
    assert df[STRONG_MODEL].dtype == bool and df[WEAK_MODEL].dtype == bool
    assert df[STRONG_MODEL].mean() == pytest.approx(0.806, abs=0.001)
    assert df[WEAK_MODEL].mean() == pytest.approx(0.681, abs=0.001)
    # the hash split halves MMLU
    assert (df["split"] == "test").mean() == pytest.approx(0.5, abs=0.02)
    clean, dropped = drop_contaminated(df, "mmlu", DATA_DIR)
    assert dropped == 5 and len(clean) == 14037


@needs_data
def test_gsm8k_matches_the_data_readme():
    df = load_gsm8k(DATA_DIR)
    assert len(df) == 1319
    assert set(df.columns) == {"prompt", STRONG_MODEL, WEAK_MODEL}
    assert df[STRONG_MODEL].mean() == pytest.approx(0.857, abs=0.001)
    assert df[WEAK_MODEL].mean() == pytest.approx(0.638, abs=0.001)
    clean, dropped = drop_contaminated(df, "gsm8k", DATA_DIR)
    assert dropped == 12 and len(clean) == 1307


@needs_data
def test_mt_bench_averages_both_turns_and_drops_contaminated_questions():
    df = load_mt_bench(DATA_DIR)
    assert len(df) == 80
    assert df[STRONG_MODEL].mean() == pytest.approx(9.23, abs=0.01)
    assert df[WEAK_MODEL].mean() == pytest.approx(8.34, abs=0.01)
    first = df.iloc[0]
    assert first["question_id"] == 81 and first["prompt"].startswith("Compose an engaging travel blog")
    clean, dropped = drop_contaminated(df, "mt-bench", DATA_DIR)
    assert dropped == 8 and len(clean) == 72


@needs_data
def test_commercial_mt_bench_scores_match_routellm_readme():
    df = load_commercial_mt_bench(DATA_DIR)
    assert len(df) == 320 and df["score"].isna().sum() == 1
    means = df.groupby("model")["score"].mean()
    assert means["martian"] == pytest.approx(8.3125, abs=1e-6)
    assert means["unify"] == pytest.approx(8.757862, abs=1e-6)


@needs_data
def test_arena_bench_has_fifteen_models_and_normalised_names():
    df = load_arena_bench(DATA_DIR)
    models = datasets.arena_models(df)
    assert len(df) == 300 and len(models) == 15
    assert STRONG_MODEL in models and WEAK_MODEL in models
    assert "gpt-4-turbo" not in models
    # about 1% of grades are missing
    assert df[models].isna().to_numpy().mean() == pytest.approx(0.0087, abs=0.003)
    assert df[models].min().min() >= 0 and df[models].max().max() <= 10
