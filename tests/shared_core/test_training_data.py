"""Battle and outcome tables: readers, validation errors, outcomes -> battles."""

import json

import numpy as np
import pandas as pd
import pytest

from shared_core.errors import DataError
from shared_core.training.data import (
    arena_to_battles,
    outcomes_to_battles,
    read_battles,
    read_outcomes,
    read_training_data,
    validate_battles,
    validate_outcomes,
)


def battles(**overrides):
    data = {
        "prompt": ["p1", "p2", "p3"],
        "model_a": ["gpt-4", "gpt-4", "llama"],
        "model_b": ["llama", "mixtral", "mixtral"],
        "winner": ["model_a", "tie", "model_b"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_battles_round_trip_csv_and_jsonl(tmp_path):
    df = battles()
    df.to_csv(tmp_path / "b.csv", index=False)
    df.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    for name in ("b.csv", "b.jsonl"):
        got = read_battles(tmp_path / name)
        assert got[["prompt", "model_a", "model_b", "winner"]].equals(df)
    both = read_training_data([tmp_path / "b.csv", tmp_path / "b.jsonl"])
    assert len(both) == 6


def test_tie_bothbad_is_a_tie():
    got = validate_battles(battles(winner=["model_a", "tie (bothbad)", "model_b"]))
    assert got["winner"].tolist() == ["model_a", "tie", "model_b"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"winner": ["model_a", "draw", "model_b"]}, "row 1 is 'draw'"),
        ({"prompt": ["p1", "", "p3"]}, "column 'prompt'"),
        ({"model_b": ["llama", None, "mixtral"]}, "column 'model_b'"),
        ({"model_b": ["GPT-4", "mixtral", "mixtral"]}, "against itself"),
    ],
)
def test_bad_battles_name_the_value(overrides, message):
    with pytest.raises(DataError, match=message):
        validate_battles(battles(**overrides))


def test_missing_column_is_named():
    with pytest.raises(DataError, match=r"miss column\(s\) \['winner'\]"):
        validate_battles(battles().drop(columns=["winner"]))
    with pytest.raises(DataError, match="have no rows"):
        validate_battles(battles().iloc[:0])


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_battles(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(DataError, match="must end in .csv, .jsonl or .json"):
        read_battles(tmp_path / "x.txt")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="cannot read"):
        read_battles(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="format must be"):
        read_battles(tmp_path / "bad.jsonl", format="parquet")


def arena_frame():
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "model_a": ["gpt-4-1106-preview", "claude-1", "vicuna-13b"],
            "model_b": ["mixtral-8x7b-instruct-v0.1", "gpt-4-0613", "llama-13b"],
            "prompt": [json.dumps(["hi", "and then?"]), json.dumps(["solve x"]), json.dumps(["tie me"])],
            "response_a": ["...", "...", "..."],
            "response_b": ["...", "...", "..."],
            "winner_model_a": [1, 0, 0],
            "winner_model_b": [0, 1, 0],
            "winner_tie": [0, 0, 1],
        }
    )


def test_arena_layout_converts(tmp_path):
    got = arena_to_battles(arena_frame())
    assert got["winner"].tolist() == ["model_a", "model_b", "tie"]
    assert got["prompt"].tolist() == ["and then?", "solve x", "tie me"]  # last turn, as routing does
    assert arena_to_battles(arena_frame(), turn="first")["prompt"][0] == "hi"
    assert arena_to_battles(arena_frame(), turn="join")["prompt"][0] == "hi\n\nand then?"
    assert "response_a" in got.columns  # extra columns are kept
    arena_frame().to_csv(tmp_path / "arena.csv", index=False)
    assert read_battles(tmp_path / "arena.csv", format="arena")["winner"].tolist() == ["model_a", "model_b", "tie"]


def test_arena_layout_errors():
    bad = arena_frame()
    bad.loc[1, "winner_tie"] = 1
    with pytest.raises(DataError, match=r"row 1: exactly one of .* got \[0.0, 1.0, 1.0\]"):
        arena_to_battles(bad)
    bad = arena_frame()
    bad.loc[2, "prompt"] = "not [json"
    with pytest.raises(DataError, match="row 2 must be a JSON-encoded list of turns"):
        arena_to_battles(bad)
    with pytest.raises(DataError, match=r"miss column\(s\) \['winner_tie'\]"):
        arena_to_battles(arena_frame().drop(columns=["winner_tie"]))


def test_outcomes_flags_to_battles():
    df = pd.DataFrame({"prompt": ["a", "b", "c"], "strong": [True, True, False], "weak": [False, True, True]})
    got = outcomes_to_battles(df)
    assert got[["prompt", "model_a", "model_b", "winner"]].values.tolist() == [
        ["a", "strong", "weak", "model_a"],
        ["b", "strong", "weak", "tie"],
        ["c", "strong", "weak", "model_b"],
    ]


def test_outcomes_scores_every_pair_skipping_missing():
    df = pd.DataFrame(
        {
            "question_id": ["q1", "q2"],
            "prompt": ["a", "b"],
            "m1": [9.0, 3],
            "m2": [7, np.nan],
            "m3": [9, 5.5],
        }
    )
    got = outcomes_to_battles(df)
    # q1: 3 pairs; q2: only m1-m3 (m2 missing)
    assert len(got) == 4
    q1 = got[got["question_id"] == "q1"].set_index(["model_a", "model_b"])["winner"].to_dict()
    assert q1 == {("m1", "m2"): "model_a", ("m1", "m3"): "tie", ("m2", "m3"): "model_b"}
    q2 = got[got["question_id"] == "q2"]
    assert q2[["model_a", "model_b", "winner"]].values.tolist() == [["m1", "m3", "model_b"]]
    assert outcomes_to_battles(df, models=["m1", "m2"]).shape[0] == 1


@pytest.mark.parametrize(
    "column, message",
    [
        (["x", "y"], "holds 'x'"),
        ([11.0, 3.0], "holds score 11.0; judge scores must be from 1 to 10"),
        ([True, False], r"mix correctness flags \(m2\) and judge scores"),
    ],
)
def test_bad_outcomes_name_the_value(column, message):
    df = pd.DataFrame({"prompt": ["a", "b"], "m1": [3.0, 4.0], "m2": column})
    with pytest.raises(DataError, match=message):
        validate_outcomes(df)


def test_outcomes_need_two_models_and_known_columns(tmp_path):
    with pytest.raises(DataError, match="at least two model columns"):
        validate_outcomes(pd.DataFrame({"prompt": ["a"], "m1": [True]}))
    with pytest.raises(DataError, match=r"no column for model\(s\) \['m9'\]"):
        validate_outcomes(pd.DataFrame({"prompt": ["a"], "m1": [True], "m2": [False]}), models=["m1", "m9"])
    with pytest.raises(DataError, match="no prompt has outcomes for two models"):
        outcomes_to_battles(pd.DataFrame({"prompt": ["a"], "m1": [True], "m2": [None]}))
    pd.DataFrame({"prompt": ["a"], "m1": [1], "m2": [0]}).to_csv(tmp_path / "o.csv", index=False)
    assert read_outcomes(tmp_path / "o.csv")[["m1", "m2"]].values.tolist() == [[1.0, 0.0]]
    assert read_training_data([tmp_path / "o.csv"], "outcomes")["winner"].tolist() == ["model_a"]


def test_numeric_looking_prompts_stay_text(tmp_path):
    (tmp_path / "b.csv").write_text("prompt,model_a,model_b,winner\n42,a,b,tie\n")
    assert read_battles(tmp_path / "b.csv")["prompt"].tolist() == ["42"]
