"""The two kinds of training data, as validated pandas DataFrames.

*Battles* (pairwise preferences) have columns ``prompt``, ``model_a``, ``model_b``
and ``winner`` in ``{"model_a", "model_b", "tie"}``. Read them with
:func:`read_battles` from CSV or JSONL, in that layout (``format="battles"``) or in
the Chatbot Arena layout RouteLLM trains on (``format="arena"``: ``prompt`` is a
JSON-encoded list of user turns and the winner is one-hot in ``winner_model_a``,
``winner_model_b``, ``winner_tie``).

*Outcomes* have a ``prompt`` column and one column per model holding either a
correctness flag (bool, or 0/1) or a 1-10 judge score; missing values are allowed.
:func:`outcomes_to_battles` turns every pair of models into battles: the higher
value wins, equal values tie, a pair with a missing value is skipped.

Every check raises :class:`~shared_core.errors.DataError` naming the column, the row
and the bad value.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from shared_core.errors import DataError
from shared_core.files import existing_file
from shared_core.routers._models import model_key

BATTLE_COLUMNS = ("prompt", "model_a", "model_b", "winner")
WINNERS = ("model_a", "model_b", "tie")
#: Chatbot Arena spells a tie where both answers were bad this way; it is a tie.
_WINNER_ALIASES = {"tie (bothbad)": "tie"}
ARENA_COLUMNS = ("prompt", "model_a", "model_b", "winner_model_a", "winner_model_b", "winner_tie")
#: Columns of an outcomes table that are neither the prompt nor a model.
ID_COLUMNS = ("question_id", "prompt_id", "id")
SCORE_RANGE = (1.0, 10.0)
_TEXT_COLUMNS = ("prompt", "model_a", "model_b", "winner", "question_id")
FORMATS = ("battles", "arena", "outcomes")


# Reading -------------------------------------------------------------------------
def read_table(path: str | Path) -> pd.DataFrame:
    """A ``.csv``, ``.jsonl`` or ``.json`` file as a DataFrame."""
    p = existing_file(path, "data file", DataError)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":  # text columns stay text ("42" is a prompt, not a number)
            return pd.read_csv(p, dtype={c: str for c in _TEXT_COLUMNS})
        if suffix == ".jsonl":
            return pd.read_json(p, lines=True, dtype=False)
        if suffix == ".json":
            return pd.read_json(p, dtype=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {str(p)!r} as {suffix[1:]}: {exc}") from None
    raise DataError(f"data file {str(p)!r} must end in .csv, .jsonl or .json, got {suffix or 'no suffix'!r}")


def read_battles(path: str | Path, format: str = "battles", *, turn: str = "last") -> pd.DataFrame:
    """Battles from a file in our layout (``"battles"``) or Chatbot Arena's (``"arena"``)."""
    if format not in ("battles", "arena"):
        raise DataError(f"battle format must be 'battles' or 'arena', got {format!r}")
    df = read_table(path)
    return arena_to_battles(df, turn=turn) if format == "arena" else validate_battles(df, source=str(path))


def read_outcomes(path: str | Path, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-model outcomes from a ``.csv``/``.jsonl`` file (see :func:`validate_outcomes`)."""
    return validate_outcomes(read_table(path), models, source=str(path))


def read_training_data(paths: Sequence[str | Path], format: str = "battles") -> pd.DataFrame:
    """Battles from one or more files of one format (outcomes are converted)."""
    if format not in FORMATS:
        raise DataError(f"data format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not paths:
        raise DataError("no data files given")
    frames = [
        outcomes_to_battles(read_outcomes(p)) if format == "outcomes" else read_battles(p, format) for p in paths
    ]
    return validate_battles(pd.concat(frames, ignore_index=True))


# Battles ---------------------------------------------------------------------------
def _where(source: str | None) -> str:
    return f" in {source!r}" if source else ""


def _check_columns(df: Any, required: Sequence[str], source: str | None, what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{what}{_where(source)} miss column(s) {missing}; expected {list(required)}, "
            f"got {[str(c) for c in df.columns]}"
        )
    if len(df) == 0:
        raise DataError(f"{what}{_where(source)} have no rows")


def _check_strings(df: pd.DataFrame, column: str, source: str | None) -> None:
    values = df[column].tolist()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise DataError(
                f"column {column!r}{_where(source)} row {i} must be a non-empty string, got {v!r}"
            )


def validate_battles(df: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Check a battles table and return a clean copy (extra columns are kept).

    ``winner`` must be ``model_a``, ``model_b`` or ``tie`` (``tie (bothbad)`` counts
    as a tie); ``model_a`` and ``model_b`` must name different models.
    """
    _check_columns(df, BATTLE_COLUMNS, source, "battles")
    out = df.reset_index(drop=True).copy()
    for column in ("prompt", "model_a", "model_b"):
        _check_strings(out, column, source)
    winners = out["winner"].map(lambda w: _WINNER_ALIASES.get(w, w) if isinstance(w, str) else w)
    bad = ~winners.isin(WINNERS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"column 'winner'{_where(source)} row {i} is {out['winner'].iloc[i]!r}; "
            f"expected one of {', '.join(WINNERS)}"
        )
    out["winner"] = winners
    same = [i for i, (a, b) in enumerate(zip(out["model_a"], out["model_b"])) if model_key(a) == model_key(b)]
    if same:
        i = same[0]
        raise DataError(
            f"battles{_where(source)} row {i} pits model {out['model_a'].iloc[i]!r} against itself"
        )
    return out


def _turn_text(value: Any, row: int, turn: str) -> str:
    turns = value
    if isinstance(value, str):
        try:
            turns = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(
                f"column 'prompt' row {row} must be a JSON-encoded list of turns, got {value[:60]!r}"
            ) from None
    if isinstance(turns, str):
        turns = [turns]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise DataError(f"column 'prompt' row {row} must hold a non-empty list of strings, got {value!r}")
    if turn == "first":
        return turns[0]
    if turn == "last":
        return turns[-1]
    return "\n\n".join(turns)


def arena_to_battles(df: pd.DataFrame, *, turn: str = "last") -> pd.DataFrame:
    """Convert the Chatbot Arena layout RouteLLM trains on into a battles table.

    ``turn`` picks the text of multi-turn prompts: ``"last"`` (the default, the
    same text :func:`shared_core.policy.routing_text` routes on), ``"first"`` or
    ``"join"`` (all turns separated by blank lines).
    """
    if turn not in ("first", "last", "join"):
        raise DataError(f"turn must be 'first', 'last' or 'join', got {turn!r}")
    _check_columns(df, ARENA_COLUMNS, None, "arena battles")
    flags = df[["winner_model_a", "winner_model_b", "winner_tie"]]
    try:
        onehot = flags.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise DataError("columns winner_model_a, winner_model_b, winner_tie must hold 0 or 1") from None
    ok = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"arena battles row {i}: exactly one of winner_model_a, winner_model_b, winner_tie must be 1, "
            f"got {onehot[i].tolist()}"
        )
    extra = [c for c in df.columns if c not in ARENA_COLUMNS]
    out = df[extra].reset_index(drop=True).copy()
    out.insert(0, "prompt", [_turn_text(v, i, turn) for i, v in enumerate(df["prompt"])])
    out.insert(1, "model_a", df["model_a"].to_numpy())
    out.insert(2, "model_b", df["model_b"].to_numpy())
    out.insert(3, "winner", np.asarray(WINNERS)[onehot.argmax(axis=1)])
    return validate_battles(out)


# Outcomes --------------------------------------------------------------------------
def _outcome_kind(column: str, values: pd.Series, source: str | None) -> str:
    """``"flag"`` (booleans), ``"binary"`` (numbers 0/1) or ``"score"``; raises otherwise."""
    present = values[values.notna()]
    if pd.api.types.is_bool_dtype(values) or all(isinstance(v, (bool, np.bool_)) for v in present):
        return "flag"
    for i, v in present.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise DataError(
                f"model column {column!r}{_where(source)} row {i} holds {v!r}; expected a correctness flag "
                "(True/False) or a judge score from 1 to 10 (pass models=[...] to name the model columns)"
            )
    return "binary" if present.astype(float).isin((0.0, 1.0)).all() else "score"


def _check_scores(column: str, values: pd.Series, source: str | None) -> None:
    numbers = values[values.notna()].astype(float)
    lo, hi = SCORE_RANGE
    out = numbers[(numbers < lo) | (numbers > hi)]
    if len(out):
        raise DataError(
            f"model column {column!r}{_where(source)} row {out.index[0]} holds score {float(out.iloc[0])!r}; "
            f"judge scores must be from {lo:g} to {hi:g}"
        )


def outcome_models(df: pd.DataFrame) -> list[str]:
    """The model columns of an outcomes table: all but ``prompt`` and id columns."""
    return [str(c) for c in df.columns if c != "prompt" and c not in ID_COLUMNS]


def validate_outcomes(
    df: pd.DataFrame, models: Sequence[str] | None = None, *, source: str | None = None
) -> pd.DataFrame:
    """Check an outcomes table; returns ``prompt``, id columns and the model columns as float.

    Model columns hold booleans (1.0/0.0 after conversion) or 1-10 scores; missing
    values become NaN. All model columns must be of one kind.
    """
    _check_columns(df, ("prompt",), source, "outcomes")
    models = outcome_models(df) if models is None else list(models)
    if len(models) < 2:
        raise DataError(f"outcomes{_where(source)} need at least two model columns, got {models}")
    missing = [m for m in models if m not in df.columns]
    if missing:
        raise DataError(f"outcomes{_where(source)} have no column for model(s) {missing}; columns: {list(df.columns)}")
    keys = [model_key(m) for m in models]
    if len(set(keys)) != len(keys):
        raise DataError(f"outcomes{_where(source)} name the same model twice among {models}")
    data = df.reset_index(drop=True)
    _check_strings(data, "prompt", source)
    kinds = {m: _outcome_kind(m, data[m], source) for m in models}
    if "score" in kinds.values():
        flags = [m for m, k in kinds.items() if k == "flag"]
        if flags:
            raise DataError(
                f"outcomes{_where(source)} mix correctness flags ({', '.join(flags)}) and judge scores "
                f"({', '.join(m for m, k in kinds.items() if k == 'score')})"
            )
        for m in models:
            _check_scores(m, data[m], source)
    ids = [c for c in data.columns if c in ID_COLUMNS]
    out = data[["prompt", *ids]].copy()
    for m in models:
        out[m] = pd.to_numeric(data[m].map(lambda v: np.nan if v is None else float(v)), errors="raise")
    return out


def outcomes_to_battles(df: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Every pair of models on every prompt as a battle: higher wins, equal ties.

    Pairs where either value is missing are skipped. Id columns (``question_id``,
    ...) are carried over to the battles.
    """
    outcomes = validate_outcomes(df, models)
    models = [c for c in outcomes.columns if c != "prompt" and c not in ID_COLUMNS]
    ids = [c for c in outcomes.columns if c in ID_COLUMNS]
    values = outcomes[models].to_numpy(dtype=float)
    frames = []
    for i, j in itertools.combinations(range(len(models)), 2):
        a, b = values[:, i], values[:, j]
        keep = ~(np.isnan(a) | np.isnan(b))
        if not keep.any():
            continue
        winner = np.where(a[keep] > b[keep], "model_a", np.where(a[keep] < b[keep], "model_b", "tie"))
        frame = pd.DataFrame({"prompt": outcomes["prompt"].to_numpy()[keep], "winner": winner})
        frame.insert(1, "model_a", models[i])
        frame.insert(2, "model_b", models[j])
        for c in ids:
            frame[c] = outcomes[c].to_numpy()[keep]
        frames.append(frame)
    if not frames:
        raise DataError(f"no prompt has outcomes for two models among {models}")
    return pd.concat(frames, ignore_index=True)
