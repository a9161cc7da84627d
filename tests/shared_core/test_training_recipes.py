"""Training recipes on a small synthetic data directory, and the ``routellm train`` command."""

import hashlib
import json

import importlib.util

import numpy as np
import pandas as pd
import pytest

from shared_core.cli import main
from shared_core.embeddings import HashEmbedder
from shared_core.errors import ConfigError, DataError
from shared_core.routers import load_router
from shared_core.routers.mf import MatrixFactorizationRouter
from shared_core.routers.sw_ranking import SWRankingRouter
from shared_core.training.recipes import RECIPES, RecipeData, get_recipe, register_recipe, train_recipe

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
ARENA_MODELS = [STRONG, WEAK, "claude-2.1", "llama-13b"]


def is_train(prompt):
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[0] in "89abcdef"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The layout of ../shared/data, tiny: MMLU csv + arena-bench questions and judgements."""
    root = tmp_path_factory.mktemp("data")
    mmlu = root / "routellm" / "mmlu" / "responses"
    mmlu.mkdir(parents=True)
    prompts = [f"{'hard proof' if i % 2 else 'easy fact'} question {i}" for i in range(60)]
    pd.DataFrame(
        {"prompt": prompts, WEAK: [i % 2 == 0 for i in range(60)], STRONG: [True] * 60}
    ).to_csv(mmlu / "mmlu_toy.csv", index=False)
    arena = root / "arena-bench-v1" / "model_judgment"
    arena.mkdir(parents=True)
    questions = [{"question_id": f"q{i}", "turns": [f"{'hard proof' if i % 2 else 'easy chat'} task {i}"]}
                 for i in range(20)]
    (root / "arena-bench-v1" / "question.jsonl").write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    rng = np.random.default_rng(0)
    for k, model in enumerate(ARENA_MODELS):
        rows = [{"question_id": q["question_id"], "model": model,
                 "score": None if (k == 3 and i == 0) else int(rng.integers(1, 11))}
                for i, q in enumerate(questions)]
        (arena / f"{model.split('/')[-1]}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_recipe_data_uses_only_allowed_data(data_dir):
    data = RecipeData(data_dir, exclude_arena_questions=frozenset({"q0", "q1"}))
    battles = data.battles()
    mmlu = battles[battles["source"] == "mmlu"]
    assert len(mmlu) == sum(is_train(f"{'hard proof' if i % 2 else 'easy fact'} question {i}") for i in range(60))
    assert all(is_train(p) for p in mmlu["prompt"])
    arena = battles[battles["source"] == "arena"]
    assert len(arena) == 18 * 6  # 18 questions x 6 model pairs
    assert not arena["prompt"].str.endswith((" 0", " 1")).any()
    with pytest.raises(DataError, match=r"unknown arena-bench question\(s\): \['nope'\]"):
        RecipeData(data_dir, exclude_arena_questions=frozenset({"nope"})).battles()
    with pytest.raises(DataError, match="no training data"):
        RecipeData(data_dir, include_mmlu_train=False, include_arena=False).battles()


@pytest.mark.parametrize("name, cls", [("mf", MatrixFactorizationRouter), ("sw_ranking", SWRankingRouter)])
def test_train_recipe_records_data_and_seed(data_dir, name, cls):
    router = train_recipe(name, data_dir=data_dir, embedder=HashEmbedder(16), seed=3, progress=False,
                          exclude_arena_questions=["q2"], options={"epochs": 3} if name == "mf" else {})
    assert isinstance(router, cls)
    assert router.training_["seed"] == 3 and router.training_["excluded_arena_questions"] == 1
    assert "MMLU train half" in router.training_["data"]
    assert router.score(["hard proof question", "easy fact question"]).shape == (2,)


def test_recipe_registry(data_dir):
    assert {"mf", "sw_ranking"} <= set(RECIPES)

    @register_recipe("toy_h2_test")
    def toy(data):
        return SWRankingRouter(data.embedder, progress=False).fit(data.battles())

    try:
        assert get_recipe("toy_h2_test") is toy
        assert isinstance(train_recipe("toy_h2_test", data_dir=data_dir, embedder=HashEmbedder(8)), SWRankingRouter)
    finally:
        RECIPES.pop("toy_h2_test")
    with pytest.raises(ConfigError, match=r"no training recipe for router .nope.; expected one of: .*mf, sw_ranking"):
        get_recipe("nope")
    with pytest.raises(ConfigError, match="not one string"):
        train_recipe("mf", data_dir=data_dir, exclude_arena_questions="q1")


def battles_csv(path):
    rows = [(f"hard proof number {i}", STRONG, WEAK, "model_a") for i in range(10)]
    rows += [(f"easy chat number {i}", STRONG, WEAK, "tie") for i in range(10)]
    pd.DataFrame(rows, columns=["prompt", "model_a", "model_b", "winner"]).to_csv(path, index=False)
    return path


def test_cli_train_from_file(tmp_path, capsys):
    data = battles_csv(tmp_path / "battles.csv")
    code = main(["train", "mf", "--data", str(data), "--output", str(tmp_path / "r"), "--embedder", "hash-16-0",
                 "--no-cache", "--epochs", "5", "--seed", "1", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["router"] == "mf" and summary["battles"] == 20 and summary["models"] == 2
    router = load_router(tmp_path / "r")
    assert router.training_["epochs"] == 5 and router.training_["seed"] == 1
    assert router.training_["data"] == [str(data)]


def test_cli_train_recipe_with_reference_prompts(tmp_path, data_dir, capsys):
    (tmp_path / "ref.txt").write_text("hard proof task\neasy chat task\nsomething\n")
    code = main(["train", "sw_ranking", "--recipe", "--data-dir", str(data_dir), "--output", str(tmp_path / "r"),
                 "--embedder", "hash-16-0", "--no-cache", "--no-progress", "--reference-prompts",
                 str(tmp_path / "ref.txt"), "--weak", "claude-2.1"])
    assert code == 0, capsys.readouterr().err
    router = load_router(tmp_path / "r")
    assert router.weak == "claude-2.1" and router.reference_quantiles.shape == (101,)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "3"], "router 'sw_ranking' has no option --epochs"),
        (["--strong", "gpt-9"], "strong model 'gpt-9' is not in the router's model table"),
    ],
)
def test_cli_train_bad_arguments(tmp_path, capsys, extra, message):
    data = battles_csv(tmp_path / "battles.csv")
    code = main(["train", "sw_ranking", "--data", str(data), "--output", str(tmp_path / "r"),
                 "--embedder", "hash-16-0", "--no-cache", "--no-progress", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_train_missing_file_and_format(tmp_path, capsys):
    code = main(["train", "mf", "--data", str(tmp_path / "none.csv"), "--output", str(tmp_path / "r"),
                 "--embedder", "hash-16-0", "--no-cache"])
    assert code == 2 and "none.csv' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "mf", "--data", "x.csv", "--format", "parquet", "--output", "r"])
    code = main(["train", "knn_h2_missing", "--recipe", "--output", str(tmp_path / "r")])
    assert code == 2 and "unknown router 'knn_h2_missing'" in capsys.readouterr().err


def test_cli_recipe_ships_quantiles_of_the_reference_set(tmp_path, data_dir):
    from shared_core.artifacts import reference_quantiles
    from shared_core.training.recipes import reference_prompts, router_reference_quantiles

    code = main(["train", "sw_ranking", "--recipe", "--data-dir", str(data_dir), "--output", str(tmp_path / "r"),
                 "--embedder", "hash-16-0", "--no-cache", "--no-progress"])
    assert code == 0
    router = load_router(tmp_path / "r")
    prompts = reference_prompts(data_dir)
    # the arena-bench prompts of the tiny data folder, then 300 chat-corpus openings (the installed corpus)
    assert len(prompts) == 20 + (300 if importlib.util.find_spec("chatterbot_corpus") else 0)
    assert np.allclose(router.reference_quantiles, router_reference_quantiles(router, data_dir))
    assert np.allclose(router.reference_quantiles, reference_quantiles(router.score(prompts)))


def test_cli_train_checks_reference_file_before_training(tmp_path, capsys, monkeypatch):
    battles = tmp_path / "b.csv"
    battles.write_text("prompt,model_a,model_b,winner\nhi,big,small,model_a\n")

    def never(*args, **kwargs):
        raise AssertionError("training data was read although the reference file is missing")

    monkeypatch.setattr("shared_core.training.data.read_training_data", never)
    code = main(["train", "sw_ranking", "--data", str(battles), "--strong", "big", "--weak", "small",
                 "--embedder", "hash-16-0", "--output", str(tmp_path / "r"),
                 "--reference-prompts", str(tmp_path / "missing.txt")])
    assert code == 2
    assert "missing.txt' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
