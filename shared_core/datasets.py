"""Readers of the router data directory (real per-prompt outcomes of real LLMs).

The directory layout is the one described in ``../shared/data/README.md``:

* ``routellm/`` -- RouteLLM's evaluation data (MMLU, GSM8K, MT-Bench, the
  commercial-router MT-Bench answers and the contaminated-prompt lists);
* ``arena-bench-v1/`` -- 300 hard Chatbot Arena prompts graded 1-10 by a GPT-4
  judge for 15 models;
* ``alpaca_eval/`` -- 569 AlpacaEval 2.0 chat instructions, 69 models each judged
  by GPT-4-turbo against ``gpt-4-1106-preview`` (data licence CC BY-NC 4.0:
  non-commercial, see :data:`ALPACA_EVAL_LICENSE`);
* ``mmlu_pro/`` -- 5,222 MMLU-Pro STEM questions (none from original MMLU) with
  the graded answers of 30 models.

:func:`load_chat_corpus` reads one more source, which is not in that directory:
the English conversations of the ``chatterbot-corpus`` package (BSD-3-Clause),
ordinary small talk, trivia and simple requests without any model outcomes.

Every loader returns a fresh :class:`pandas.DataFrame` (callers may modify it),
reads the files by path (nothing is copied into the package) and raises
:class:`~shared_core.errors.DataError` naming the missing file or column.

The routed pair is RouteLLM's: :data:`STRONG_MODEL` and :data:`WEAK_MODEL`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from shared_core.errors import DataError
from shared_core.files import jsonl_objects

#: RouteLLM's strong and weak model, as named in the data files.
STRONG_MODEL = "gpt-4-1106-preview"
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"

#: Environment variable overriding the data directory.
DATA_DIR_ENV = "ROUTELLM_DATA_DIR"

#: The strong model of the mmlu-pro benchmark (gpt-4-1106-preview was not evaluated there).
MMLU_PRO_STRONG_MODEL = "gpt-4o-2024-05-13"
#: The judge of the alpaca-eval benchmark's Mixtral answers (the other judge is ``alpaca_eval_cot_gpt4_turbo_fn``).
ALPACA_EVAL_ANNOTATOR = "alpaca_eval_gpt4_turbo_fn"
#: AlpacaEval's annotators in the order :func:`load_alpaca_eval` prefers them when a model has several.
ALPACA_EVAL_ANNOTATORS = ("alpaca_eval_gpt4_turbo_fn", "weighted_alpaca_eval_gpt4_turbo", "alpaca_eval_cot_gpt4_turbo_fn")
#: The reference model every AlpacaEval judgement compares against (the strong model of the pair).
ALPACA_EVAL_REFERENCE = "gpt-4-1106-preview"
#: AlpacaEval spells some models differently from the other sources.
ALPACA_EVAL_ALIASES = {"gpt4_1106_preview": "gpt-4-1106-preview"}
ALPACA_EVAL_LICENSE = "CC BY-NC 4.0 (AlpacaEval data: non-commercial use only)"

#: Benchmarks that ship a RouteLLM contaminated-prompt list.
CONTAMINATION_BENCHMARKS = ("mmlu", "gsm8k", "mt_bench")

_REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# Locating the data
# ---------------------------------------------------------------------------
def default_data_dir() -> Path:
    """The data directory: ``$ROUTELLM_DATA_DIR``, else ``../shared/data``.

    ``../shared/data`` is tried relative to the current directory, then relative
    to the repository this package lives in. Raises :class:`DataError` when none
    exists (or when ``$ROUTELLM_DATA_DIR`` names a missing directory).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"${DATA_DIR_ENV}={env!r} is not a directory")
        return path.resolve()
    candidates = [Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    tried = ", ".join(str(p.resolve()) for p in candidates)
    raise DataError(
        f"no router data directory found (tried {tried}); set ${DATA_DIR_ENV} or pass data_dir explicitly"
    )


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` checked to exist, or :func:`default_data_dir` when ``None``."""
    if data_dir is None:
        return default_data_dir()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist or is not a directory")
    return path.resolve()


def _file(data_dir: str | Path | None, *parts: str) -> Path:
    path = resolve_data_dir(data_dir).joinpath(*parts)
    if not path.exists():
        raise DataError(f"missing data file {str(path)!r}; is {str(resolve_data_dir(data_dir))!r} the router data directory?")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return jsonl_objects(fh, path)


def _require(df: pd.DataFrame, columns: Iterable[str], where: Path | str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{str(where)!r} lacks column(s) {missing}; has {list(df.columns)}")


# ---------------------------------------------------------------------------
# MMLU
# ---------------------------------------------------------------------------
def mmlu_split(prompt: str) -> str:
    """``"test"`` when the SHA-256 hex digest of the UTF-8 prompt starts with 0-7, else ``"train"``.

    The fixed split of the project's evaluation protocol: routers may train on
    MMLU-train and are evaluated on MMLU-test (about half of MMLU each).
    """
    if not isinstance(prompt, str):
        raise DataError(f"prompt must be a string, got {type(prompt).__name__}: {prompt!r}")
    return "test" if hashlib.sha256(prompt.encode("utf-8")).hexdigest()[0] in "01234567" else "train"


@functools.lru_cache(maxsize=4)
def _load_mmlu(directory: Path) -> pd.DataFrame:
    files = sorted(directory.glob("mmlu_*.csv"))
    if not files:
        raise DataError(f"no mmlu_<subject>.csv files in {str(directory)!r}")
    frames = []
    for f in files:
        df = pd.read_csv(f)
        _require(df, ["prompt", STRONG_MODEL, WEAK_MODEL], f)
        df.insert(1, "subject", f.stem[len("mmlu_"):])
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["prompt"] = out["prompt"].astype(str)
    out["split"] = [mmlu_split(p) for p in out["prompt"]]
    return out


def load_mmlu(data_dir: str | Path | None = None) -> pd.DataFrame:
    """All 57 MMLU subjects: ``prompt``, ``subject``, one bool column per model
    (answered correctly), and ``split`` (:func:`mmlu_split`). Contaminated prompts
    are kept; drop them with :func:`drop_contaminated`."""
    directory = _file(data_dir, "routellm", "mmlu", "responses")
    return _load_mmlu(directory).copy()


# ---------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_gsm8k(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, ["prompt", STRONG_MODEL, WEAK_MODEL], path)
    keep = ["prompt"] + [c for c in df.columns if c != "prompt" and not c.endswith("_response")]
    df = df[keep].copy()
    df["prompt"] = df["prompt"].astype(str)
    return df


def load_gsm8k(data_dir: str | Path | None = None) -> pd.DataFrame:
    """GSM8K test questions: ``prompt`` and one bool column per model (correct)."""
    return _load_gsm8k(_file(data_dir, "routellm", "gsm8k", "gsm8k_responses.csv")).copy()


# ---------------------------------------------------------------------------
# MT-Bench
# ---------------------------------------------------------------------------
def _mt_bench_scores(path: Path, model_key: str = "model") -> pd.DataFrame:
    """question_id x model table of the mean judge score over the two turns."""
    rows = _read_jsonl(path)
    df = pd.DataFrame(rows)
    _require(df, ["question_id", model_key, "turn", "score"], path)
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    # The GPT-4 judge writes -1 when it could not extract a rating.
    df.loc[df["score"] < 0, "score"] = math.nan
    dup = df.duplicated(["question_id", model_key, "turn"])
    if dup.any():
        raise DataError(f"{str(path)!r} has {int(dup.sum())} duplicate (question_id, model, turn) judgements")
    return df.pivot_table(index="question_id", columns=model_key, values="score", aggfunc="mean")


@functools.lru_cache(maxsize=4)
def _load_mt_bench(root: Path) -> pd.DataFrame:
    qpath = root / "question.jsonl"
    questions = _read_jsonl(qpath)
    table = []
    for q in questions:
        turns = q.get("turns")
        if not isinstance(turns, list) or len(turns) != 2:
            raise DataError(f"{str(qpath)!r}: question {q.get('question_id')!r} must have two turns, got {turns!r}")
        table.append({"question_id": q["question_id"], "category": q.get("category"), "prompt": turns[0],
                      "turn2": turns[1]})
    df = pd.DataFrame(table)
    scores = _mt_bench_scores(root / "judgements.jsonl")
    for model in (STRONG_MODEL, WEAK_MODEL):
        if model not in scores.columns:
            raise DataError(f"{str(root / 'judgements.jsonl')!r} has no judgements of {model!r}")
    df = df.merge(scores, left_on="question_id", right_index=True, how="left")
    return df


def load_mt_bench(data_dir: str | Path | None = None) -> pd.DataFrame:
    """The 80 MT-Bench questions: ``question_id``, ``category``, ``prompt`` (turn 1,
    what a router sees), ``turn2``, and per model the mean GPT-4 judge score (1-10)
    of its two turns (RouteLLM routes on turn 1 and scores both turns)."""
    root = _file(data_dir, "routellm", "mt_bench")
    return _load_mt_bench(root).copy()


def load_commercial_mt_bench(data_dir: str | Path | None = None) -> pd.DataFrame:
    """MT-Bench GPT-4 judgements of the commercial routers (Martian, Unify), one row
    per judgement: ``question_id``, ``model`` (``martian``/``unify``), ``turn``,
    ``score`` (NaN where the judge gave no rating, written -1 in the file).

    FastChat's MT-Bench score is the mean of the non-missing ``score``s; RouteLLM's
    benchmarks/README reports 8.3125 for Martian and 8.757862 for Unify this way.
    """
    path = _file(data_dir, "routellm", "commercial-mt-bench", "gpt-4_single.jsonl")
    df = pd.DataFrame(_read_jsonl(path))
    _require(df, ["question_id", "model", "turn", "score"], path)
    df = df[["question_id", "model", "turn", "score"]].copy()
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df.loc[df["score"] < 0, "score"] = math.nan
    return df


# ---------------------------------------------------------------------------
# arena-bench
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_arena_bench(root: Path) -> pd.DataFrame:
    qpath = root / "question.jsonl"
    questions = _read_jsonl(qpath)
    df = pd.DataFrame(
        {"question_id": [q["question_id"] for q in questions], "prompt": [q["turns"][0] for q in questions]}
    )
    if df["question_id"].duplicated().any():
        raise DataError(f"{str(qpath)!r} has duplicate question_ids")
    judgment_dir = root / "model_judgment"
    files = sorted(judgment_dir.glob("*.jsonl"))
    if not files:
        raise DataError(f"no judgement files in {str(judgment_dir)!r}")
    columns: dict[str, pd.Series] = {}
    for f in files:
        rows = _read_jsonl(f)
        models = {r.get("model") for r in rows}
        if len(models) != 1 or not isinstance(next(iter(models)), str):
            raise DataError(f"{str(f)!r} must hold judgements of exactly one model, found {sorted(map(str, models))}")
        model = models.pop()  # the `model` field names the model, not the file name
        if model in columns:
            raise DataError(f"model {model!r} is judged in more than one file under {str(judgment_dir)!r}")
        scores = pd.Series(
            pd.to_numeric(pd.Series([r.get("score") for r in rows], dtype=object), errors="coerce").to_numpy(float),
            index=[r["question_id"] for r in rows],
        )
        if scores.index.duplicated().any():
            raise DataError(f"{str(f)!r} judges some question more than once")
        columns[model] = scores
    for model in (STRONG_MODEL, WEAK_MODEL):
        if model not in columns:
            raise DataError(f"no judgement file of {model!r} in {str(judgment_dir)!r}; found {sorted(columns)}")
    scores = pd.DataFrame(columns)
    return df.merge(scores, left_on="question_id", right_index=True, how="left")


def load_arena_bench(data_dir: str | Path | None = None) -> pd.DataFrame:
    """arena-bench-v1: ``question_id``, ``prompt`` (the single turn) and, per each of
    the 15 judged models, its GPT-4 judge grade (float 1-10; NaN where the judge
    gave none). Model names come from the ``model`` field inside each file
    (``gpt-4-turbo.jsonl`` holds ``gpt-4-1106-preview``)."""
    root = _file(data_dir, "arena-bench-v1")
    return _load_arena_bench(root).copy()


def arena_models(df: pd.DataFrame) -> list[str]:
    """The model columns of a :func:`load_arena_bench` frame."""
    return [c for c in df.columns if c not in ("question_id", "prompt")]


# ---------------------------------------------------------------------------
# AlpacaEval
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_alpaca_prompts(path: Path) -> pd.DataFrame:
    rows = _read_jsonl(path)
    df = pd.DataFrame(rows)
    _require(df, ["prompt_id", "dataset", "instruction"], path)
    bad = [i for i, v in enumerate(df["instruction"]) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise DataError(f"{str(path)!r} line {bad[0] + 1}: 'instruction' must be a non-empty string")
    df["prompt_id"] = df["prompt_id"].astype(str)
    if df["prompt_id"].duplicated().any():
        raise DataError(f"{str(path)!r} has duplicate prompt_ids, e.g. {df['prompt_id'][df['prompt_id'].duplicated()].iloc[0]!r}")
    return df.rename(columns={"instruction": "prompt"})[["prompt_id", "dataset", "prompt"]]


@functools.lru_cache(maxsize=4)
def _load_alpaca_judgments(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"prompt_id": str, "model": str, "annotator": str})
    _require(df, ["prompt_id", "model", "annotator", "preference"], path)
    pref = pd.to_numeric(df["preference"], errors="coerce")
    bad = pref.isna() | (pref < 1) | (pref > 2)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{str(path)!r} row {i + 2}: preference {str(df['preference'].iloc[i])!r} is not a number in [1, 2]")
    df = df.assign(preference=pref.astype(float))
    df["model"] = df["model"].map(lambda m: ALPACA_EVAL_ALIASES.get(m, m))
    keys = ["prompt_id", "model", "annotator"]
    # The file repeats some judgements verbatim; a repeat with another value is an error.
    spread = df.groupby(keys)["preference"].agg(["min", "max"])
    conflict = spread[spread["max"] - spread["min"] > 1e-9]
    if len(conflict):
        raise DataError(f"{str(path)!r} judges {conflict.index[0]} twice with different preferences")
    return df.drop_duplicates(keys).reset_index(drop=True)


def load_alpaca_eval_judgments(data_dir: str | Path | None = None) -> pd.DataFrame:
    """Every AlpacaEval judgement, one row each: ``prompt_id``, ``model``, ``annotator`` and
    ``win`` = P(``model``'s answer preferred over gpt-4-1106-preview's) = ``preference - 1``.

    Verbatim repeats in the file are kept once; ``gpt4_1106_preview`` is spelled
    ``gpt-4-1106-preview`` as in the other sources. Data licence: :data:`ALPACA_EVAL_LICENSE`.
    """
    df = _load_alpaca_judgments(_file(data_dir, "alpaca_eval", "judgments.csv")).copy()
    df["win"] = df.pop("preference") - 1.0
    return df


def load_alpaca_eval(
    data_dir: str | Path | None = None, annotators: Iterable[str] = ALPACA_EVAL_ANNOTATORS
) -> tuple[pd.DataFrame, dict[str, str]]:
    """AlpacaEval as outcomes: ``prompt_id``, ``dataset``, ``prompt`` and, per model, its win
    probability against gpt-4-1106-preview (in [0, 1]; NaN where not judged).

    A model judged by several annotators takes the first of ``annotators`` that judged it;
    the second value returned maps each model column to its annotator. The reference
    model itself is a column of 0.5 (its answer against itself). Data licence:
    :data:`ALPACA_EVAL_LICENSE`.
    """
    order = list(annotators)
    if not order:
        raise DataError("annotators must name at least one AlpacaEval annotator")
    prompts = _load_alpaca_prompts(_file(data_dir, "alpaca_eval", "prompts.jsonl"))
    judged = load_alpaca_eval_judgments(data_dir)
    if not set(order) & set(judged["annotator"]):
        raise DataError(f"no AlpacaEval judgements by annotator(s) {order}; the file has {sorted(set(judged['annotator']))}")
    rank = {a: i for i, a in enumerate(order)}
    judged = judged[judged["annotator"].isin(rank)]
    first = judged.assign(rank=judged["annotator"].map(rank)).groupby("model")["rank"].min()
    chosen = {m: order[int(r)] for m, r in first.items()}
    judged = judged[judged["annotator"] == judged["model"].map(chosen)]
    stray = sorted(set(judged["prompt_id"]) - set(prompts["prompt_id"]))
    if stray:
        raise DataError(f"AlpacaEval judgements name prompt_ids not in prompts.jsonl, e.g. {stray[:3]}")
    wide = judged.pivot(index="prompt_id", columns="model", values="win")
    wide[ALPACA_EVAL_REFERENCE] = 0.5
    chosen.setdefault(ALPACA_EVAL_REFERENCE, "reference")
    out = prompts.merge(wide, left_on="prompt_id", right_index=True, how="left")
    out[ALPACA_EVAL_REFERENCE] = 0.5
    return out.reset_index(drop=True), chosen


# ---------------------------------------------------------------------------
# MMLU-Pro
# ---------------------------------------------------------------------------
OPTION_LETTERS = "ABCDEFGHIJKLMNOP"


def mmlu_pro_prompt(question: str, options: Iterable[str]) -> str:
    """A question and its options in RouteLLM's MMLU prompt layout: ``A. ...`` lines, then ``Answer:``."""
    opts = list(options)
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"an MMLU-Pro question must be a non-empty string, got {question!r}")
    if not opts or len(opts) > len(OPTION_LETTERS):
        raise DataError(f"an MMLU-Pro question needs 1-{len(OPTION_LETTERS)} options, got {len(opts)}")
    lines = [question.strip(), *(f"{OPTION_LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(opts)), "Answer:"]
    return "\n".join(lines)


@functools.lru_cache(maxsize=4)
def _load_mmlu_pro(root: Path) -> pd.DataFrame:
    qpath = root / "questions.jsonl"
    qs = pd.DataFrame(_read_jsonl(qpath))
    _require(qs, ["question_id", "src", "category", "question", "options"], qpath)
    qs["question_id"] = qs["question_id"].astype(str)
    if qs["question_id"].duplicated().any():
        raise DataError(f"{str(qpath)!r} has duplicate question_ids")
    for i, opts in enumerate(qs["options"]):
        if not isinstance(opts, list):
            raise DataError(f"{str(qpath)!r} line {i + 1}: 'options' must be a list, got {opts!r}")
    qs["prompt"] = [mmlu_pro_prompt(q, o) for q, o in zip(qs["question"], qs["options"])]
    opath = root / "outcomes.csv"
    outcomes = pd.read_csv(opath, dtype={"question_id": str, "model": str})
    _require(outcomes, ["question_id", "model", "correct"], opath)
    correct = pd.to_numeric(outcomes["correct"], errors="coerce")
    bad = ~correct.isin((0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{str(opath)!r} row {i + 2}: correct {str(outcomes['correct'].iloc[i])!r} is not 0 or 1")
    outcomes = outcomes.assign(correct=correct.astype(float))
    dup = outcomes.duplicated(["question_id", "model"])
    if dup.any():
        raise DataError(f"{str(opath)!r} grades {tuple(outcomes.loc[dup, ['question_id', 'model']].iloc[0])} twice")
    stray = sorted(set(outcomes["question_id"]) - set(qs["question_id"]))
    if stray:
        raise DataError(f"{str(opath)!r} grades question_ids not in questions.jsonl, e.g. {stray[:3]}")
    wide = outcomes.pivot(index="question_id", columns="model", values="correct")
    out = qs[["question_id", "src", "category", "prompt"]].merge(wide, left_on="question_id", right_index=True, how="left")
    return out.reset_index(drop=True)


def load_mmlu_pro(data_dir: str | Path | None = None) -> pd.DataFrame:
    """MMLU-Pro: ``question_id``, ``src``, ``category``, ``prompt`` (question and options in
    RouteLLM's MMLU layout, :func:`mmlu_pro_prompt`) and per model 1.0/0.0 (answer right)
    or NaN (not graded)."""
    return _load_mmlu_pro(_file(data_dir, "mmlu_pro")).copy()


#: Licence of the chatterbot-corpus conversations (:func:`load_chat_corpus`).
CHAT_CORPUS_LICENSE = "BSD-3-Clause (chatterbot-corpus)"


def _chat_corpus_dir(language: str) -> Path:
    try:
        import chatterbot_corpus
    except ImportError as exc:
        raise DataError(
            "the chat corpus needs the chatterbot-corpus package: pip install -e \".[train]\" "
            "(or pip install chatterbot-corpus)"
        ) from exc
    return Path(chatterbot_corpus.__file__).resolve().parent / "data" / language


def load_chat_corpus(directory: str | Path | None = None, *, language: str = "english") -> pd.DataFrame:
    """The opening user turn of every chatterbot-corpus conversation: ``prompt``, ``category``.

    ``directory`` holds the corpus's ``*.yml`` files (default: the installed
    ``chatterbot-corpus`` package's ``data/<language>``). Each file has a
    ``categories`` list and ``conversations``, lists of turns starting with the
    user's; the first turn of each conversation is kept, once per text (the corpus
    repeats openings with different replies). These prompts have no model
    outcomes: what a recipe assumes about them is the recipe's to say.
    """
    root = Path(directory) if directory is not None else _chat_corpus_dir(language)
    return _load_chat_corpus(root.resolve()).copy()


@functools.lru_cache(maxsize=4)
def _load_chat_corpus(root: Path) -> pd.DataFrame:
    import yaml

    files = sorted(root.glob("*.yml")) if root.is_dir() else []
    if not files:
        raise DataError(f"no chat corpus files (*.yml) in {str(root)!r}")
    rows: dict[str, str] = {}
    for path in files:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DataError(f"chat corpus file {str(path)!r} is not valid YAML text: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
            raise DataError(f"chat corpus file {str(path)!r} has no 'conversations' list")
        categories = doc.get("categories")
        category = str(categories[0]) if isinstance(categories, list) and categories else path.stem
        for turns in doc["conversations"]:
            if isinstance(turns, list) and turns and isinstance(turns[0], str) and turns[0].strip():
                rows.setdefault(turns[0].strip(), category)
    if not rows:
        raise DataError(f"the chat corpus in {str(root)!r} has no conversation that starts with a text turn")
    return pd.DataFrame({"prompt": list(rows), "category": list(rows.values())})


def outcome_columns(df: pd.DataFrame) -> list[str]:
    """The model columns of an :func:`load_alpaca_eval` / :func:`load_mmlu_pro` / :func:`load_arena_bench` frame."""
    meta = {"question_id", "prompt_id", "prompt", "dataset", "src", "category", "subject", "split", "turn2"}
    return [c for c in df.columns if c not in meta]


# ---------------------------------------------------------------------------
# Contamination
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _contaminated(path: Path) -> frozenset[str]:
    rows = _read_jsonl(path)
    bad = [i for i, r in enumerate(rows) if not isinstance(r.get("eval_prompt"), str)]
    if bad:
        raise DataError(f"{str(path)!r} rows {bad[:5]} lack a string 'eval_prompt'")
    return frozenset(r["eval_prompt"] for r in rows)


def contaminated_prompts(benchmark: str, data_dir: str | Path | None = None) -> frozenset[str]:
    """RouteLLM's contaminated evaluation prompts of ``benchmark`` (mmlu, gsm8k, mt_bench):
    eval prompts that also appear in RouteLLM's router training data."""
    key = benchmark.replace("-", "_")
    if key not in CONTAMINATION_BENCHMARKS:
        raise DataError(f"no contaminated-prompt list for benchmark {benchmark!r}; expected one of {CONTAMINATION_BENCHMARKS}")
    return _contaminated(_file(data_dir, "routellm", key, "contaminated_prompts.jsonl"))


def drop_contaminated(
    df: pd.DataFrame, benchmark: str, data_dir: str | Path | None = None
) -> tuple[pd.DataFrame, int]:
    """Rows of ``df`` whose prompt is not in RouteLLM's contaminated list, and how many were dropped.

    As RouteLLM does, a row is dropped when its ``prompt`` (or, for MT-Bench, its
    ``turn2``) is a contaminated eval prompt.
    """
    bad = contaminated_prompts(benchmark, data_dir)
    _require(df, ["prompt"], "the frame given to drop_contaminated")
    mask = df["prompt"].isin(bad)
    if "turn2" in df.columns:
        mask |= df["turn2"].isin(bad)
    return df[~mask].reset_index(drop=True), int(mask.sum())
