"""The evaluation runner, the protocol (retraining without test prompts), the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from shared_core.datasets import default_data_dir
from shared_core.errors import ConfigError, DataError
from shared_core.evaluation import benchmarks as B
from shared_core.evaluation.metrics import oracle_curve, routing_curve
from shared_core.evaluation.runner import Evaluator, describe_training, saw_test_prompts
from shared_core.routers import Router

try:
    DATA_DIR = default_data_dir()
except DataError:  # pragma: no cover - depends on the machine
    DATA_DIR = None
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="router data directory ../shared/data not found")


class LengthRouter(Router):
    """Scores longer prompts higher; records the data it was 'trained' on."""

    name = "length"

    def __init__(self, training=None):
        self.training_ = training or {}

    def _score(self, prompts):
        return np.array([min(len(p) / 100.0, 1.0) for p in prompts])


def toy_bench(folds=None):
    prompts = [f"q{i} " + "x" * (5 * i) for i in range(20)]
    strong = np.ones(20)
    weak = np.array([1.0] * 10 + [0.0] * 10)  # the weak model fails the long prompts
    return B.Benchmark(
        name="arena-bench" if folds else "toy",
        prompts=prompts,
        strong_quality=strong,
        weak_quality=weak,
        quality_name="accuracy",
        excluded_from_training="toy",
        question_ids=[f"id{i}" for i in range(20)] if folds else None,
        folds=folds,
    )


# --- runner ------------------------------------------------------------------
def test_rows_include_random_and_oracle_with_known_numbers():
    ev = Evaluator(loader=lambda spec: LengthRouter({"data": ["toy data"]}))
    res = ev.evaluate(toy_bench(), ["length"])
    assert [r.router for r in res.rows] == ["random", "length", "oracle"]
    length = res.row("length")
    # A perfect ranking: the same curve as the oracle's, APGR 0.75 on this 50/50 gap
    assert length.metrics.apgr == pytest.approx(0.75)
    assert res.row("oracle").metrics.apgr == pytest.approx(0.75)
    assert length.trained_on == "toy data" and not length.retrained
    assert res.row("random").extra["seeds"] == list(range(10))


def test_arena_bench_is_cross_validated_with_a_retrained_router_per_fold():
    folds = [[f"id{i}" for i in range(k, 20, 4)] for k in range(4)]
    calls = []

    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        calls.append((recipe, sorted(exclude_arena_questions), include_mmlu_train))
        return LengthRouter({"data": ["arena-bench-v1 battles"], "exclude_arena_questions": exclude_arena_questions})

    shipped = LengthRouter({"data": ["arena-bench-v1 battles", "mmlu-train outcomes"]})
    ev = Evaluator(loader=lambda spec: shipped, trainer=trainer)
    row = ev.evaluate(toy_bench(folds), ["mf"]).row("mf")
    assert row.retrained
    assert [c[0] for c in calls] == ["mf"] * 4
    assert [c[1] for c in calls] == [sorted(f) for f in folds]
    assert "retrained 4x" in row.trained_on
    assert row.metrics.apgr == pytest.approx(0.75)  # the fold routers score like the shipped one here


def test_shipped_router_used_where_it_saw_no_test_prompts():
    def trainer(*a, **k):  # must not be called
        raise AssertionError("retrained without need")

    shipped = LengthRouter({"data": ["arena-bench-v1 battles", "mmlu-train outcomes"]})
    ev = Evaluator(loader=lambda spec: shipped, trainer=trainer)
    bench = toy_bench()
    object.__setattr__(bench, "name", "gsm8k")
    assert not ev.evaluate(bench, ["mf"]).row("mf").retrained


def test_router_trained_on_the_benchmark_is_refused():
    shipped = LengthRouter({"data": ["gsm8k outcomes"]})
    bench = toy_bench()
    object.__setattr__(bench, "name", "gsm8k")
    with pytest.raises(ConfigError, match="trained on gsm8k"):
        Evaluator(loader=lambda spec: shipped).evaluate(bench, ["mf"])


def test_saw_test_prompts_reads_training_records():
    assert saw_test_prompts(None, "mmlu") is None
    assert saw_test_prompts({"data": ["arena-bench-v1"]}, "arena-bench") is True
    assert saw_test_prompts({"data": ["arena-bench-v1"], "exclude_arena_questions": ["a"]}, "arena-bench") is False
    assert saw_test_prompts({"data": ["arena-bench-v1"]}, "mmlu") is False
    assert saw_test_prompts({"data": ["mmlu-train outcomes"]}, "mmlu") is False
    assert saw_test_prompts({"data": ["mmlu outcomes"]}, "mmlu") is True
    assert describe_training({"data": {"arena": 300}}) == "arena: 300"
    assert describe_training({}) == "unknown (no training record)"


def test_arena_folds_partition_the_questions():
    ids = [f"q{i}" for i in range(300)]
    folds = B.arena_folds(ids)
    assert sorted(sum(folds, [])) == sorted(ids)
    assert [len(f) for f in folds] == [60] * 5
    assert B.arena_folds(list(reversed(ids))) == folds  # order of input does not matter


# --- labelled files -------------------------------------------------------------
def test_labelled_file_columns_and_errors(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("prompt,strong,weak\na,1,0\nb,True,True\nc,,1\n")
    bench = B.load_benchmark(f)
    assert bench.n == 2 and bench.notes["rows_dropped"] == 1
    assert list(bench.strong_quality) == [1.0, 1.0]
    with pytest.raises(DataError, match="no strong column 'gpt'"):
        B.load_labelled_file(f, strong_column="gpt")
    g = tmp_path / "bad.csv"
    g.write_text("prompt,strong,weak\na,good,0\n")
    with pytest.raises(DataError, match="'good' is not a number"):
        B.load_labelled_file(g)
    with pytest.raises(DataError, match="unknown benchmark 'hellaswag'"):
        B.load_benchmark("hellaswag", tmp_path)


# --- the CLI through add_parser ------------------------------------------------------
def test_cli_evaluates_a_labelled_file(tmp_path, capsys):
    from shared_core.evaluation import cli

    f = tmp_path / "mine.jsonl"
    rows = [{"prompt": f"p{i} " + "y" * i, "good": 1.0, "cheap": float(i < 30)} for i in range(60)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parser = argparse.ArgumentParser(prog="routellm")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    out = tmp_path / "out"
    args = parser.parse_args([
        "evaluate", "--benchmark", str(f), "--routers", "random", "--strong-column", "good",
        "--weak-column", "cheap", "--out", str(out), "--markdown", str(out / "table.md"),
    ])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "random" in printed and "oracle" in printed
    data = json.loads((out / "results.json").read_text())
    (bench,) = data["benchmarks"]
    assert bench["benchmark"]["n_prompts"] == 60
    assert [r["router"] for r in bench["rows"]] == ["random", "oracle"]
    assert bench["rows"][0]["apgr"] == pytest.approx(0.5, abs=0.1)
    assert bench["rows"][1]["apgr"] == pytest.approx(0.75, abs=0.01)
    assert (out / "mine.png").stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert "routellm evaluate --benchmark" in table
    assert "| random | 0." in table and "| oracle | 0.75" in table


def test_cli_requires_a_benchmark():
    from shared_core.cli import main

    assert main(["evaluate", "--routers", "random"]) == 2


# --- the real benchmarks ----------------------------------------------------------------
@needs_data
def test_random_row_on_mmlu_test_is_half():
    bench = B.load_benchmark("mmlu", DATA_DIR)
    assert bench.n == pytest.approx(7021, abs=0)
    row = Evaluator(DATA_DIR).random_row(bench)
    assert row.metrics.apgr == pytest.approx(0.50, abs=0.03)
    assert row.metrics.cpt[0.5] == pytest.approx(0.50, abs=0.03)


@needs_data
def test_oracle_is_above_every_router_on_mmlu_test():
    bench = B.load_benchmark("mmlu", DATA_DIR)
    res = Evaluator(DATA_DIR, loader=lambda spec: LengthRouter({"data": ["none"]})).evaluate(bench, ["length"])
    oracle = res.row("oracle").metrics.apgr
    assert oracle == pytest.approx(1.28, abs=0.01)
    rng = np.random.default_rng(0)
    gain = bench.strong_quality - bench.weak_quality
    others = [r.metrics.apgr for r in res.rows if r.router != "oracle"]
    for noise in (0.1, 1.0, 10.0):  # near-oracle routers, still below it
        scores = gain + rng.normal(0, noise, bench.n)
        curve = routing_curve(scores, bench.strong_quality, bench.weak_quality)
        others.append(Evaluator(DATA_DIR).scores_row(bench, "noisy", scores, "test").metrics.apgr)
        assert curve.quality.max() <= oracle_curve(bench.strong_quality, bench.weak_quality).quality.max() + 1e-9
    assert max(others) < oracle


@needs_data
def test_mt_bench_comparison_with_commercial_routers():
    bench = B.load_benchmark("mt-bench", DATA_DIR)
    res = Evaluator(DATA_DIR).evaluate(bench, ["random"])
    comps = {c["commercial_router"]: c for c in res.comparisons}
    assert set(comps) == {"martian", "unify"}
    assert comps["unify"]["published_mt_bench"] == pytest.approx(8.757862)
    assert comps["unify"]["mt_bench_same_questions"] == pytest.approx(8.885, abs=0.001)
    assert comps["martian"]["mt_bench_same_questions"] == pytest.approx(8.458, abs=0.001)
    # the oracle reaches Unify's score with far fewer strong calls than random
    need = comps["unify"]["strong_share_needed"]
    assert need["oracle"] < need["random"]


def test_retrained_routers_are_cached_between_runs(tmp_path):
    import pandas as pd

    from shared_core.embeddings import HashEmbedder
    from shared_core.routers.mf import MatrixFactorizationRouter

    folds = [[f"id{i}" for i in range(k, 20, 2)] for k in range(2)]
    bench = toy_bench(folds)
    calls = []

    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        calls.append(recipe)
        battles = pd.DataFrame({"prompt": bench.prompts, "model_a": "big", "model_b": "small",
                                "winner": ["tie"] * 10 + ["model_a"] * 10})
        router = MatrixFactorizationRouter(HashEmbedder(), strong="big", weak="small", epochs=2, progress=False)
        router = router.fit(battles)
        router.training_ = {"data": "toy arena-bench", "excluded_arena_questions": len(exclude_arena_questions)}
        return router

    shipped = LengthRouter({"data": ["arena-bench-v1 battles"]})
    first = Evaluator(loader=lambda s: shipped, trainer=trainer, model_cache=tmp_path).evaluate(bench, ["mf"])
    assert calls == ["mf", "mf"]
    second = Evaluator(loader=lambda s: shipped, trainer=trainer, model_cache=tmp_path).evaluate(bench, ["mf"])
    assert calls == ["mf", "mf"]  # both fold routers came from the cache
    assert second.row("mf").metrics.apgr == pytest.approx(first.row("mf").metrics.apgr, abs=1e-6)
    assert len(list(tmp_path.iterdir())) == 2


def test_recipe_router_is_trained_on_allowed_data_then_cross_validated():
    folds = [[f"id{i}" for i in range(k, 20, 2)] for k in range(2)]
    calls = []

    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        calls.append((recipe, len(exclude_arena_questions)))
        return LengthRouter({"data": "arena-bench-v1 battles", "excluded_arena_questions": len(exclude_arena_questions)})

    ev = Evaluator(trainer=trainer)
    res = ev.evaluate(toy_bench(folds), ["recipe:knn"])
    assert [r.router for r in res.rows] == ["random", "knn", "oracle"]
    assert calls == [("knn", 0), ("knn", 10), ("knn", 10)]  # full data once, then once per fold
    assert res.row("knn").retrained


@needs_data
@pytest.mark.slow
def test_oracle_is_above_the_shipped_routers_on_mmlu_test():
    from shared_core.engine import shipped_router_names

    names = shipped_router_names()
    if not names:
        pytest.skip("no shipped router checkpoints")
    res = Evaluator(DATA_DIR).evaluate(B.load_benchmark("mmlu", DATA_DIR), names)
    oracle = res.row("oracle").metrics.apgr
    assert res.row("random").metrics.apgr == pytest.approx(0.50, abs=0.03)
    for row in res.rows:
        if row.router != "oracle":
            assert row.metrics.apgr < oracle
            assert not row.retrained  # the shipped routers trained on MMLU-train only
