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


def mf_trainer(bench, calls):
    """A trainer of toy mf routers on ``bench``'s prompts, recording each call in ``calls``."""
    import pandas as pd

    from shared_core.embeddings import HashEmbedder
    from shared_core.routers.mf import MatrixFactorizationRouter

    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        calls.append(recipe)
        battles = pd.DataFrame({"prompt": bench.prompts, "model_a": "big", "model_b": "small",
                                "winner": ["tie"] * 10 + ["model_a"] * 10})
        router = MatrixFactorizationRouter(HashEmbedder(), strong="big", weak="small", epochs=2, progress=False)
        router = router.fit(battles)
        router.training_ = {"data": "toy arena-bench", "excluded_arena_questions": len(exclude_arena_questions)}
        return router

    return trainer


TWO_FOLDS = [[f"id{i}" for i in range(k, 20, 2)] for k in range(2)]
ARENA_TRAINED = LengthRouter({"data": ["arena-bench-v1 battles"]})


def test_retrained_routers_are_cached_between_runs(tmp_path):
    bench, calls = toy_bench(TWO_FOLDS), []
    trainer = mf_trainer(bench, calls)
    first = Evaluator(loader=lambda s: ARENA_TRAINED, trainer=trainer, model_cache=tmp_path).evaluate(bench, ["mf"])
    assert calls == ["mf", "mf"]
    second = Evaluator(loader=lambda s: ARENA_TRAINED, trainer=trainer, model_cache=tmp_path).evaluate(bench, ["mf"])
    assert calls == ["mf", "mf"]  # both fold routers came from the cache
    assert second.row("mf").metrics.apgr == pytest.approx(first.row("mf").metrics.apgr, abs=1e-6)
    assert len(list(tmp_path.iterdir())) == 2


def test_a_corrupt_or_unwritable_router_cache_does_not_stop_evaluation(tmp_path):
    bench, calls, logs = toy_bench(TWO_FOLDS), [], []
    trainer = mf_trainer(bench, calls)
    cache = tmp_path / "cache"
    first = Evaluator(loader=lambda s: ARENA_TRAINED, trainer=trainer, model_cache=cache).evaluate(bench, ["mf"])
    for directory in cache.iterdir():
        (directory / "model.safetensors").write_bytes(b"garbage")
    again = Evaluator(loader=lambda s: ARENA_TRAINED, trainer=trainer, model_cache=cache, log=logs.append)
    assert again.evaluate(bench, ["mf"]).row("mf").metrics.apgr == pytest.approx(first.row("mf").metrics.apgr, abs=1e-6)
    assert calls == ["mf"] * 4 and sum("cannot read the cached router" in line for line in logs) == 2
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    logs.clear()
    Evaluator(loader=lambda s: ARENA_TRAINED, trainer=trainer, model_cache=blocker / "cache",
              log=logs.append).evaluate(bench, ["mf"])
    assert calls == ["mf"] * 6 and sum("cannot cache the retrained router" in line for line in logs) == 2


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


# --- checks before the run, and no shared state changed ------------------------------------
def labelled_file(tmp_path):
    f = tmp_path / "mine.jsonl"
    rows = [{"prompt": f"p{i} " + "y" * i, "strong": 1.0, "weak": float(i < 10)} for i in range(20)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f


@pytest.fixture
def evaluations(monkeypatch):
    """Counts the benchmarks Evaluator.evaluate is run on."""
    calls = []
    original = Evaluator.evaluate

    def counting(self, bench, routers):
        calls.append(bench.name)
        return original(self, bench, routers)

    monkeypatch.setattr(Evaluator, "evaluate", counting)
    return calls


def test_cli_refuses_an_out_that_is_a_file_before_running(tmp_path, capsys, evaluations):
    from shared_core.cli import main

    f = labelled_file(tmp_path)
    taken = tmp_path / "results.txt"
    taken.write_text("keep me")
    assert main(["evaluate", "-b", str(f), "-r", "random", "--out", str(taken), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(taken)!r} is an existing file" in err
    assert evaluations == [] and taken.read_text() == "keep me"


def test_cli_refuses_to_overwrite_results_unless_asked(tmp_path, capsys, evaluations):
    from shared_core.cli import main

    f = labelled_file(tmp_path)
    out, md = tmp_path / "out", tmp_path / "table.md"
    argv = ["evaluate", "-b", str(f), "-r", "random", "--out", str(out), "--markdown", str(md), "--no-plot"]
    assert main(argv) == 0 and evaluations == ["mine"]
    first = (out / "results.json").read_text()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "results.json" in err and "table.md" in err and "--overwrite" in err
    assert evaluations == ["mine"] and (out / "results.json").read_text() == first
    assert main([*argv, "--overwrite"]) == 0 and evaluations == ["mine", "mine"]
    assert "--overwrite" in json.loads((out / "results.json").read_text())["meta"]["command"]


def test_cli_refuses_a_markdown_path_that_is_a_directory(tmp_path, capsys, evaluations):
    from shared_core.cli import main

    argv = ["evaluate", "-b", str(labelled_file(tmp_path)), "-r", "random", "--out", str(tmp_path / "o"),
            "--markdown", str(tmp_path), "--no-plot"]
    assert main(argv) == 2 and "is a directory" in capsys.readouterr().err and evaluations == []


def test_evaluate_says_where_its_data_comes_from(tmp_path, monkeypatch, capsys):
    from shared_core.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for words in ("RouteLLM", "arena-hard-auto", "--data-dir", "$ROUTELLM_DATA_DIR", "../shared/data"):
        assert words in help_text, words
    monkeypatch.setenv("ROUTELLM_DATA_DIR", str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["evaluate", "-b", "mmlu", "--out", str(tmp_path / "o")],
                 ["evaluate", "-b", "gsm8k", "--data-dir", str(empty), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "lm-sys/RouteLLM" in err and "lmarena/arena-hard-auto" in err and "$ROUTELLM_DATA_DIR" in err, err


class EmbeddingRouter(LengthRouter):
    """LengthRouter with an embedder, as the trained routers have."""

    name = "embedding"

    def __init__(self):
        from shared_core.embeddings import HashEmbedder

        super().__init__({"data": ["toy data"]})
        self.embedder = HashEmbedder(8)

    def _score(self, prompts):
        self.embedder.embed(prompts)
        return super()._score(prompts)


def test_evaluation_does_not_change_the_shipped_router_that_serving_shares(tmp_path, monkeypatch):
    from shared_core.embeddings import CachedEmbedder
    from shared_core.engine import resolve_router
    from shared_core.evaluation.runner import load_router_for_eval

    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    shared = resolve_router("default")
    embedder = shared.embedder
    evaluated = load_router_for_eval("default")
    assert isinstance(evaluated.embedder, CachedEmbedder) and evaluated.embedder.inner is embedder
    assert resolve_router("default") is shared
    assert resolve_router("default").embedder is embedder and not isinstance(embedder, CachedEmbedder)


def test_evaluator_leaves_a_router_object_as_it_was(tmp_path, monkeypatch):
    from shared_core.embeddings import CachedEmbedder

    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    router = EmbeddingRouter()
    embedder = router.embedder
    res = Evaluator().evaluate(toy_bench(), [router])
    assert res.row("embedding").metrics.apgr == pytest.approx(0.75)
    assert router.embedder is embedder and not isinstance(router.embedder, CachedEmbedder)
    assert CachedEmbedder(embedder, tmp_path / "cache").cache.count() == 20  # the evaluation's copy cached


def test_default_alias_retrains_the_recipe_of_the_router_it_names(monkeypatch):
    import shared_core.engine as engine

    monkeypatch.setattr(engine, "shipped_aliases", lambda: {"default": "adaptive_ensemble_pro"})
    folds = [[f"id{i}" for i in range(k, 20, 2)] for k in range(2)]
    calls = []

    def trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train):
        calls.append(recipe)
        return LengthRouter({"data": ["arena-bench-v1"], "exclude_arena_questions": exclude_arena_questions})

    shipped = LengthRouter({"data": ["arena-bench-v1 battles"]})
    row = Evaluator(loader=lambda spec: shipped, trainer=trainer).evaluate(toy_bench(folds), ["default"]).row("default")
    assert row.retrained and calls == ["adaptive_ensemble_pro"] * 2


def test_peer_rows_sit_before_the_oracle_and_name_their_training(monkeypatch):
    bench = toy_bench()
    rows = Evaluator(loader=lambda spec: LengthRouter({"data": ["toy"]})).evaluate(bench, ["length"], peers=["prompt-length"]).rows
    assert [r.router for r in rows] == ["random", "length", "prompt-length", "oracle"]
    assert rows[2].trained_on.startswith("nothing") and rows[2].metrics.apgr == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="unknown peer router 'gpt'"):
        Evaluator().evaluate(bench, [], peers=["gpt"])


def test_saw_test_prompts_of_the_new_cross_validated_benchmarks():
    pro = {"data": "MMLU train half + MMLU-Pro right/wrong of all 30 models"}
    assert saw_test_prompts(pro, "mmlu-pro") is True
    assert saw_test_prompts({**pro, "excluded_questions": {"mmlu_pro": 1000}}, "mmlu-pro") is False
    assert saw_test_prompts(pro, "mmlu") is False  # MMLU-Pro and the MMLU train half are not MMLU-test
    assert saw_test_prompts(pro, "alpaca-eval") is False
    nc = {"data": "... + AlpacaEval 2.0 judgements", "excluded_questions": {"alpaca_eval": 114}}
    assert saw_test_prompts(nc, "alpaca-eval") is False
    assert saw_test_prompts({"data": "AlpacaEval 2.0 judgements"}, "alpaca-eval") is True


def test_langchain_model_router_peer_scores_with_its_own_signals():
    pytest.importorskip("langchain_model_router")
    from shared_core.evaluation.peers import peer_scorer

    scores = peer_scorer("lmr-heuristic")(["hi", "Prove step by step that sqrt(2) is irrational, analysing each case."])
    assert scores.shape == (2,) and scores[1] > scores[0]
