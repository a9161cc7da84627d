"""AlpacaEval and MMLU-Pro: readers, benchmarks and held-out folds, on tiny files shaped like the real ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared_core import datasets
from shared_core.evaluation import benchmarks as B
from shared_core.errors import ConfigError, DataError
from shared_core.training.recipes import RecipeData

MIXTRAL = "Mixtral-8x7B-Instruct-v0.1"
GPT4O = "gpt-4o-2024-05-13"


def write_alpaca(root, judgments=None, prompts=None):
    """``alpaca_eval/prompts.jsonl`` + ``judgments.csv`` as in ../shared/data (6 prompts, 3 models)."""
    d = root / "alpaca_eval"
    d.mkdir(parents=True, exist_ok=True)
    prompts = prompts or [{"prompt_id": f"p{i}", "dataset": "oasst", "instruction": f"instruction {i}"} for i in range(6)]
    (d / "prompts.jsonl").write_text("\n".join(json.dumps(p) for p in prompts) + "\n")
    if judgments is None:
        rows = []
        for i in range(6):
            rows.append((f"p{i}", MIXTRAL, "alpaca_eval_gpt4_turbo_fn", 1.0 if i % 2 else 2.0))
            rows.append((f"p{i}", MIXTRAL, "alpaca_eval_cot_gpt4_turbo_fn", 1.0))
            rows.append((f"p{i}", "vicuna-7b", "weighted_alpaca_eval_gpt4_turbo", 1.25))
            rows.append((f"p{i}", "vicuna-7b", "weighted_alpaca_eval_gpt4_turbo", 1.25))  # verbatim repeat
            rows.append((f"p{i}", "gpt4_1106_preview", "weighted_alpaca_eval_gpt4_turbo", 1.5))
        judgments = pd.DataFrame(rows, columns=["prompt_id", "model", "annotator", "preference"])
    judgments.to_csv(d / "judgments.csv", index=False)
    return root


def write_mmlu_pro(root, n=10, outcomes=None):
    d = root / "mmlu_pro"
    d.mkdir(parents=True, exist_ok=True)
    qs = [{"question_id": str(70 + i), "src": "stemez-Physics", "category": "physics",
           "question": f"What is {i} + {i}?", "options": [str(i), str(2 * i), "7"], "answer": "B"} for i in range(n)]
    (d / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in qs) + "\n")
    if outcomes is None:
        rows = [(q["question_id"], m, int((i + k) % 3 != 0)) for i, q in enumerate(qs)
                for k, m in enumerate([GPT4O, MIXTRAL, "Yi-6B"]) if not (m == GPT4O and i == 0)]
        outcomes = pd.DataFrame(rows, columns=["question_id", "model", "correct"])
    outcomes.to_csv(d / "outcomes.csv", index=False)
    return root


# --- AlpacaEval ------------------------------------------------------------------------
def test_alpaca_eval_outcomes_are_win_rates_against_the_reference(tmp_path):
    write_alpaca(tmp_path)
    df, annotators = datasets.load_alpaca_eval(tmp_path)
    assert list(df["prompt"][:2]) == ["instruction 0", "instruction 1"]
    assert list(df[MIXTRAL]) == [1.0, 0.0] * 3  # preference 2.0 = Mixtral preferred
    assert annotators[MIXTRAL] == "alpaca_eval_gpt4_turbo_fn"  # first of the preferred annotators
    assert df["vicuna-7b"].tolist() == [0.25] * 6  # the verbatim repeat is kept once
    assert df["gpt-4-1106-preview"].tolist() == [0.5] * 6  # gpt4_1106_preview is the reference model
    long = datasets.load_alpaca_eval_judgments(tmp_path)
    assert len(long) == 6 * 4 and set(long["win"]) <= {0.0, 0.25, 0.5, 1.0}


def test_alpaca_eval_reader_rejects_bad_files(tmp_path):
    bad = pd.DataFrame([("p0", MIXTRAL, "alpaca_eval_gpt4_turbo_fn", 3.0)],
                       columns=["prompt_id", "model", "annotator", "preference"])
    write_alpaca(tmp_path / "a", bad)
    with pytest.raises(DataError, match=r"preference '3\.0' is not a number in \[1, 2\]"):
        datasets.load_alpaca_eval(tmp_path / "a")
    conflict = pd.DataFrame([("p0", MIXTRAL, "x", 1.0), ("p0", MIXTRAL, "x", 2.0)],
                            columns=["prompt_id", "model", "annotator", "preference"])
    write_alpaca(tmp_path / "b", conflict)
    with pytest.raises(DataError, match="twice with different preferences"):
        datasets.load_alpaca_eval_judgments(tmp_path / "b")
    stray = pd.DataFrame([("zz", MIXTRAL, "alpaca_eval_gpt4_turbo_fn", 1.0)],
                         columns=["prompt_id", "model", "annotator", "preference"])
    write_alpaca(tmp_path / "c", stray)
    with pytest.raises(DataError, match="not in prompts.jsonl"):
        datasets.load_alpaca_eval(tmp_path / "c")
    write_alpaca(tmp_path / "d")
    with pytest.raises(DataError, match=r"annotator\(s\) \['nope'\]"):
        datasets.load_alpaca_eval(tmp_path / "d", annotators=["nope"])
    with pytest.raises(DataError, match="alpaca_eval"):
        datasets.load_alpaca_eval(tmp_path / "e")


def test_alpaca_eval_benchmark_scores_strong_half_and_weak_its_win_rate(tmp_path):
    write_alpaca(tmp_path)
    bench = B.load_benchmark("alpaca-eval", tmp_path)
    assert bench.n == 6 and bench.source == "alpaca_eval"
    assert bench.strong_quality.tolist() == [0.5] * 6
    assert bench.weak_quality.tolist() == [1.0, 0.0] * 3  # the gpt4_turbo_fn judge, not the cot one
    assert bench.notes["annotator"] == "alpaca_eval_gpt4_turbo_fn"
    assert sorted(q for f in bench.folds for q in f) == sorted(bench.question_ids)
    assert "non-commercial" in bench.describe()["data_license"]


# --- MMLU-Pro --------------------------------------------------------------------------
def test_mmlu_pro_prompts_follow_the_mmlu_layout(tmp_path):
    write_mmlu_pro(tmp_path)
    df = datasets.load_mmlu_pro(tmp_path)
    assert df["prompt"][1] == "What is 1 + 1?\nA. 1\nB. 2\nC. 7\nAnswer:"
    assert df["question_id"].tolist()[:2] == ["70", "71"]  # ids stay text
    assert np.isnan(df[GPT4O][0]) and df[MIXTRAL].notna().all()
    assert datasets.outcome_columns(df) == sorted([GPT4O, MIXTRAL, "Yi-6B"])


def test_mmlu_pro_reader_rejects_bad_outcomes(tmp_path):
    write_mmlu_pro(tmp_path / "a", outcomes=pd.DataFrame([("70", MIXTRAL, 2)], columns=["question_id", "model", "correct"]))
    with pytest.raises(DataError, match="correct '2' is not 0 or 1"):
        datasets.load_mmlu_pro(tmp_path / "a")
    twice = pd.DataFrame([("70", MIXTRAL, 1), ("70", MIXTRAL, 0)], columns=["question_id", "model", "correct"])
    write_mmlu_pro(tmp_path / "b", outcomes=twice)
    with pytest.raises(DataError, match="twice"):
        datasets.load_mmlu_pro(tmp_path / "b")
    with pytest.raises(DataError, match="options"):
        datasets.mmlu_pro_prompt("q?", [])


def test_mmlu_pro_benchmark_uses_gpt4o_as_strong_and_drops_ungraded(tmp_path):
    write_mmlu_pro(tmp_path)
    bench = B.load_benchmark("mmlu-pro", tmp_path)
    assert bench.strong_model == GPT4O and bench.weak_model == MIXTRAL
    assert bench.n == 9 and bench.notes["ungraded_dropped"] == 1  # question 70 has no gpt-4o grade
    assert set(bench.strong_quality) <= {0.0, 100.0}
    assert bench.describe()["cv_source"] == "mmlu_pro"
    assert sum(len(i) for i in bench.fold_indices()) == 9


# --- held-out folds in the recipes ------------------------------------------------------
def test_recipe_data_drops_held_out_questions_by_id_and_by_text(tmp_path):
    write_mmlu_pro(tmp_path)
    write_alpaca(tmp_path)
    data = RecipeData(tmp_path, exclude_questions={"mmlu_pro": ["71", "72"], "alpaca_eval": ["p0"]})
    assert not data.mmlu_pro()["question_id"].isin(["71", "72"]).any() and len(data.mmlu_pro()) == 8
    assert "p0" not in set(data.alpaca_eval()["prompt_id"])
    # a training row elsewhere with the text of a held-out question is dropped too
    elsewhere = pd.DataFrame({"prompt": ["instruction 0", "What is 1 + 1?\nA. 1\nB. 2\nC. 7\nAnswer:", "fine"]})
    assert data.drop_held_out_texts(elsewhere)["prompt"].tolist() == ["fine"]
    assert data.description()["excluded_questions"] == {"alpaca_eval": 1, "mmlu_pro": 2}


def test_recipe_data_refuses_unknown_sources_ids_and_switched_off_sources(tmp_path):
    write_mmlu_pro(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown source\(s\) \['gsm8k'\]"):
        RecipeData(tmp_path, exclude_questions={"gsm8k": ["1"]})
    with pytest.raises(ConfigError, match="not one string"):
        RecipeData(tmp_path, exclude_questions={"mmlu_pro": "71"})
    with pytest.raises(DataError, match=r"unknown MMLU-Pro question id\(s\): \['999'\]"):
        RecipeData(tmp_path, exclude_questions={"mmlu_pro": ["999"]}).mmlu_pro()
    with pytest.raises(DataError, match="include_alpaca_eval is off"):
        RecipeData(tmp_path, include_alpaca_eval=False).alpaca_eval()


# --- the real data, when present -------------------------------------------------------
try:
    REAL = datasets.default_data_dir()
except DataError:  # pragma: no cover - depends on the machine
    REAL = None
needs_data = pytest.mark.skipif(REAL is None or not (REAL / "mmlu_pro").is_dir(), reason="router data not found")


@needs_data
def test_real_sources_match_the_data_readme():
    alpaca = B.load_benchmark("alpaca-eval", REAL)
    assert alpaca.n == 569 and 1 - alpaca.weak_mean == pytest.approx(0.778, abs=0.001)  # gpt-4 preferred ~78%
    df, _ = datasets.load_alpaca_eval(REAL)
    assert len(datasets.outcome_columns(df)) == 69
    pro = datasets.load_mmlu_pro(REAL)
    assert len(pro) == 5222 and len(datasets.outcome_columns(pro)) == 30
    bench = B.load_benchmark("mmlu-pro", REAL)
    assert bench.n == 5086
    assert (bench.strong_mean, bench.weak_mean) == pytest.approx((72.39, 37.30), abs=0.01)
