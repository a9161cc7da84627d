"""The benchmarks of the evaluation protocol, as plain data.

A :class:`Benchmark` holds what a router sees (``prompts``), the quality of the
strong and of the weak model on each prompt, and the training rule that keeps
numbers comparable:

========== ================================ ======================================== =====================
benchmark  prompts evaluated                 quality                                  a router may train on
========== ================================ ======================================== =====================
mmlu       MMLU-test (SHA-256 hash split),   accuracy (%)                             anything but MMLU-test
           minus RouteLLM's contaminated
gsm8k      GSM8K test, minus contaminated    accuracy (%)                             anything but GSM8K
mt-bench   80 questions minus contaminated;  mean GPT-4 judge score of both turns     anything but MT-Bench
           routed on turn 1
arena-bench 300 arena-bench-v1 prompts with  GPT-4 judge grade (1-10)                 5-fold CV by question:
           a grade for both models                                                    all but the fold
alpaca-eval 569 AlpacaEval 2.0 instructions   win rate against gpt-4-1106-preview:     5-fold CV by prompt:
                                             strong 0.5, weak P(Mixtral preferred)    all but the fold
                                             (judge ``alpaca_eval_gpt4_turbo_fn``)
mmlu-pro   MMLU-Pro questions graded for     accuracy (%)                             5-fold CV by question:
           both gpt-4o and Mixtral                                                    all but the fold
========== ================================ ======================================== =====================

The strong model is ``gpt-4-1106-preview`` and the weak one
``mistralai/Mixtral-8x7B-Instruct-v0.1`` (RouteLLM's pair) everywhere but on
mmlu-pro, where gpt-4-1106-preview was not evaluated and ``gpt-4o-2024-05-13``
is the strong model. A user's own labelled file (``prompt`` plus a strong and a
weak quality column) is a benchmark too (:func:`load_labelled_file`).

A cross-validated benchmark names the training ``source`` its folds hold out
(``arena``, ``alpaca_eval``, ``mmlu_pro``: the names the training recipes use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from shared_core import datasets
from shared_core.datasets import ALPACA_EVAL_ANNOTATOR, MMLU_PRO_STRONG_MODEL, STRONG_MODEL, WEAK_MODEL
from shared_core.errors import DataError
from shared_core.evaluation import BENCHMARKS
from shared_core.files import existing_file
from shared_core.routers._models import same_model

#: Cross-validation of arena-bench, alpaca-eval and mmlu-pro: folds and the seed of the id shuffle.
CV_FOLDS = 5
CV_FOLD_SEED = 0
ARENA_FOLDS, ARENA_FOLD_SEED = CV_FOLDS, CV_FOLD_SEED
_ALIASES = {
    "mt_bench": "mt-bench", "mtbench": "mt-bench", "arena": "arena-bench", "arena_bench": "arena-bench",
    "alpaca_eval": "alpaca-eval", "alpaca": "alpaca-eval", "alpacaeval": "alpaca-eval", "mmlu_pro": "mmlu-pro",
    "mmlupro": "mmlu-pro",
}  # fmt: skip


@dataclass(frozen=True)
class Benchmark:
    """Prompts and per-prompt strong/weak quality of one benchmark.

    ``folds`` (arena-bench) lists, per cross-validation fold, the ``question_id``s
    whose prompts that fold's router must not be trained on; prompts of a fold are
    scored by the router trained without them. ``excluded_from_training`` says in
    words what a router evaluated here must not have seen.
    """

    name: str
    prompts: list[str]
    strong_quality: np.ndarray
    weak_quality: np.ndarray
    quality_name: str
    excluded_from_training: str
    question_ids: list[Any] | None = None
    folds: list[list[Any]] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    strong_model: str = STRONG_MODEL
    weak_model: str = WEAK_MODEL
    #: The training source whose questions the folds hold out (``arena``, ``alpaca_eval``, ``mmlu_pro``).
    source: str | None = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if n == 0:
            raise DataError(f"benchmark {self.name!r} has no prompts")
        if len(self.strong_quality) != n or len(self.weak_quality) != n:
            raise DataError(
                f"benchmark {self.name!r}: {n} prompts but {len(self.strong_quality)} strong and "
                f"{len(self.weak_quality)} weak quality values"
            )
        if self.question_ids is not None and len(self.question_ids) != n:
            raise DataError(f"benchmark {self.name!r}: {n} prompts but {len(self.question_ids)} question ids")

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def strong_mean(self) -> float:
        return float(np.mean(self.strong_quality))

    @property
    def weak_mean(self) -> float:
        return float(np.mean(self.weak_quality))

    def fold_indices(self) -> list[np.ndarray]:
        """Row indices of the prompts in each fold (empty list without folds)."""
        if not self.folds:
            return []
        if self.question_ids is None:
            raise DataError(f"benchmark {self.name!r} has folds but no question ids")
        where = {q: k for k, fold in enumerate(self.folds) for q in fold}
        missing = [q for q in self.question_ids if q not in where]
        if missing:
            raise DataError(f"benchmark {self.name!r}: questions {missing[:3]} are in no fold")
        fold_of = np.array([where[q] for q in self.question_ids])
        return [np.flatnonzero(fold_of == k) for k in range(len(self.folds))]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_prompts": self.n,
            "quality": self.quality_name,
            "strong_model": self.strong_model,
            "weak_model": self.weak_model,
            "strong_quality": self.strong_mean,
            "weak_quality": self.weak_mean,
            "excluded_from_training": self.excluded_from_training,
            "cv_folds": len(self.folds) if self.folds else 0,
            "cv_source": self.source,
            **self.notes,
        }


def _quality(df: pd.DataFrame, column: str, scale: float = 1.0) -> np.ndarray:
    return df[column].astype(float).to_numpy() * scale


def load_mmlu_test(data_dir: str | Path | None = None) -> Benchmark:
    df = datasets.load_mmlu(data_dir)
    total = len(df)
    df, contaminated = datasets.drop_contaminated(df, "mmlu", data_dir)
    test = df[df["split"] == "test"].reset_index(drop=True)
    return Benchmark(
        name="mmlu",
        prompts=test["prompt"].tolist(),
        strong_quality=_quality(test, STRONG_MODEL, 100.0),
        weak_quality=_quality(test, WEAK_MODEL, 100.0),
        quality_name="accuracy (%)",
        excluded_from_training="MMLU-test (prompts whose SHA-256 hex digest starts with 0-7)",
        notes={"split": "test", "mmlu_rows": total, "contaminated_dropped": contaminated},
    )


def load_gsm8k(data_dir: str | Path | None = None) -> Benchmark:
    df, contaminated = datasets.drop_contaminated(datasets.load_gsm8k(data_dir), "gsm8k", data_dir)
    return Benchmark(
        name="gsm8k",
        prompts=df["prompt"].tolist(),
        strong_quality=_quality(df, STRONG_MODEL, 100.0),
        weak_quality=_quality(df, WEAK_MODEL, 100.0),
        quality_name="accuracy (%)",
        excluded_from_training="all of GSM8K (never trained on)",
        notes={"contaminated_dropped": contaminated},
    )


def load_mt_bench(data_dir: str | Path | None = None) -> Benchmark:
    df, contaminated = datasets.drop_contaminated(datasets.load_mt_bench(data_dir), "mt_bench", data_dir)
    return Benchmark(
        name="mt-bench",
        prompts=df["prompt"].tolist(),
        strong_quality=_quality(df, STRONG_MODEL),
        weak_quality=_quality(df, WEAK_MODEL),
        quality_name="MT-Bench score (1-10, mean of both turns)",
        excluded_from_training="all of MT-Bench (never trained on)",
        question_ids=df["question_id"].tolist(),
        notes={"contaminated_dropped": contaminated, "routed_on": "turn 1"},
    )


def cv_folds(question_ids: Sequence[Any], n_folds: int = CV_FOLDS, seed: int = CV_FOLD_SEED) -> list[list[Any]]:
    """Question ids split into ``n_folds`` folds of near-equal size (seeded shuffle of the sorted ids)."""
    ids = sorted(set(question_ids), key=str)
    order = np.random.default_rng(seed).permutation(len(ids))
    return [[ids[i] for i in part] for part in np.array_split(order, n_folds)]


arena_folds = cv_folds


def load_arena_bench(data_dir: str | Path | None = None) -> Benchmark:
    df = datasets.load_arena_bench(data_dir)
    folds = arena_folds(df["question_id"])  # over all 300 questions, graded or not
    graded = df[STRONG_MODEL].notna() & df[WEAK_MODEL].notna()
    kept = df[graded].reset_index(drop=True)
    return Benchmark(
        name="arena-bench",
        prompts=kept["prompt"].tolist(),
        strong_quality=_quality(kept, STRONG_MODEL),
        weak_quality=_quality(kept, WEAK_MODEL),
        quality_name="GPT-4 judge grade (1-10)",
        excluded_from_training=f"the test fold's arena-bench questions ({ARENA_FOLDS}-fold CV by question)",
        question_ids=kept["question_id"].tolist(),
        folds=folds,
        notes={
            "ungraded_dropped": int((~graded).sum()),
            "ungraded_strong": int(df[STRONG_MODEL].isna().sum()),
            "ungraded_weak": int(df[WEAK_MODEL].isna().sum()),
        },
        source="arena",
    )


def load_alpaca_eval(data_dir: str | Path | None = None) -> Benchmark:
    """alpaca-eval: the routed system's win rate against gpt-4-1106-preview, per prompt.

    Routed strong, a prompt scores 0.5 (the reference model against itself); routed
    weak, P(Mixtral's answer preferred) under the ``alpaca_eval_gpt4_turbo_fn`` judge.
    """
    judged = datasets.load_alpaca_eval_judgments(data_dir)
    weak = judged[(judged["annotator"] == ALPACA_EVAL_ANNOTATOR)
                  & judged["model"].map(lambda m: same_model(m, WEAK_MODEL))]
    if weak.empty:
        raise DataError(f"AlpacaEval has no {ALPACA_EVAL_ANNOTATOR!r} judgements of {WEAK_MODEL!r}")
    prompts, _ = datasets.load_alpaca_eval(data_dir, annotators=[ALPACA_EVAL_ANNOTATOR])
    win = dict(zip(weak["prompt_id"], weak["win"]))
    kept = prompts[prompts["prompt_id"].isin(win)].reset_index(drop=True)
    weak_quality = kept["prompt_id"].map(win).to_numpy(float)
    return Benchmark(
        name="alpaca-eval",
        prompts=kept["prompt"].tolist(),
        strong_quality=np.full(len(kept), 0.5),
        weak_quality=weak_quality,
        quality_name=f"win rate vs gpt-4-1106-preview (judge {ALPACA_EVAL_ANNOTATOR})",
        excluded_from_training=f"the test fold's AlpacaEval prompts ({CV_FOLDS}-fold CV by prompt)",
        question_ids=kept["prompt_id"].tolist(),
        folds=cv_folds(kept["prompt_id"]),
        notes={"annotator": ALPACA_EVAL_ANNOTATOR, "not_judged_dropped": int(len(prompts) - len(kept)),
               "data_license": datasets.ALPACA_EVAL_LICENSE},
        source="alpaca_eval",
    )


def load_mmlu_pro(data_dir: str | Path | None = None) -> Benchmark:
    """mmlu-pro: accuracy of gpt-4o-2024-05-13 (strong) and Mixtral-8x7B-Instruct-v0.1 (weak)."""
    df = datasets.load_mmlu_pro(data_dir)
    weak_col = next((c for c in datasets.outcome_columns(df)
                     if same_model(c, WEAK_MODEL)), None)
    for name, col in (("strong", MMLU_PRO_STRONG_MODEL if MMLU_PRO_STRONG_MODEL in df.columns else None),
                      ("weak", weak_col)):
        if col is None:
            raise DataError(f"MMLU-Pro outcomes have no {name} model column; models: {datasets.outcome_columns(df)}")
    graded = df[MMLU_PRO_STRONG_MODEL].notna() & df[weak_col].notna()
    kept = df[graded].reset_index(drop=True)
    return Benchmark(
        name="mmlu-pro",
        prompts=kept["prompt"].tolist(),
        strong_quality=_quality(kept, MMLU_PRO_STRONG_MODEL, 100.0),
        weak_quality=_quality(kept, weak_col, 100.0),
        quality_name="accuracy (%)",
        excluded_from_training=f"the test fold's MMLU-Pro questions ({CV_FOLDS}-fold CV by question)",
        question_ids=kept["question_id"].tolist(),
        folds=cv_folds(df["question_id"]),
        notes={"ungraded_dropped": int((~graded).sum())},
        strong_model=MMLU_PRO_STRONG_MODEL,
        weak_model=weak_col,
        source="mmlu_pro",
    )


def load_labelled_file(
    path: str | Path, strong_column: str | None = None, weak_column: str | None = None
) -> Benchmark:
    """A user's labelled prompts: a ``.csv``/``.jsonl`` with ``prompt`` and two quality columns.

    The quality columns are ``strong_column``/``weak_column`` if given, else
    ``strong``/``weak``, else the model names :data:`STRONG_MODEL`/:data:`WEAK_MODEL`.
    Bools count as 0/1; rows missing either quality are dropped and counted.
    """
    p = existing_file(path, "labelled file", DataError)
    if p.suffix.lower() == ".csv":
        df = pd.read_csv(p)
    elif p.suffix.lower() == ".jsonl":
        df = pd.read_json(p, lines=True, dtype=False)
    else:
        raise DataError(f"labelled file {str(p)!r} must end in .csv or .jsonl")
    if "prompt" not in df.columns:
        raise DataError(f"labelled file {str(p)!r} has no 'prompt' column; columns: {list(df.columns)}")

    def pick(given: str | None, defaults: tuple[str, ...], role: str) -> str:
        if given is not None:
            if given not in df.columns:
                raise DataError(f"labelled file {str(p)!r} has no {role} column {given!r}; columns: {list(df.columns)}")
            return given
        for c in defaults:
            if c in df.columns:
                return c
        raise DataError(
            f"labelled file {str(p)!r} has no {role} quality column (looked for {list(defaults)}); "
            f"columns: {list(df.columns)}; name it with --{role}-column"
        )

    sc = pick(strong_column, ("strong", STRONG_MODEL), "strong")
    wc = pick(weak_column, ("weak", WEAK_MODEL), "weak")
    values = {}
    for role, c in (("strong", sc), ("weak", wc)):
        col = df[c]
        words = {"true": 1.0, "false": 0.0}
        as_number = col.map(lambda v: words.get(v.strip().lower(), v) if isinstance(v, str) else v)
        as_number = as_number.map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else v)
        num = pd.to_numeric(as_number, errors="coerce")
        bad = num.isna() & col.notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"labelled file {str(p)!r} row {i}: {role} quality {col.iloc[i]!r} is not a number")
        values[role] = num
    keep = values["strong"].notna() & values["weak"].notna() & df["prompt"].map(lambda x: isinstance(x, str))
    if not keep.any():
        raise DataError(f"labelled file {str(p)!r} has no row with a prompt and both qualities")
    return Benchmark(
        name=p.stem,
        prompts=df.loc[keep, "prompt"].tolist(),
        strong_quality=values["strong"][keep].to_numpy(float),
        weak_quality=values["weak"][keep].to_numpy(float),
        quality_name=f"{sc} / {wc}",
        excluded_from_training="your file (the protocol cannot check what a router saw)",
        strong_model=sc,
        weak_model=wc,
        notes={"source": str(p), "rows_dropped": int((~keep).sum())},
    )


_LOADERS = {"mmlu": load_mmlu_test, "gsm8k": load_gsm8k, "mt-bench": load_mt_bench, "arena-bench": load_arena_bench,
            "alpaca-eval": load_alpaca_eval, "mmlu-pro": load_mmlu_pro}


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _LOADERS:
        raise DataError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)} or a labelled .csv/.jsonl file")
    return key


def load_benchmark(
    name: str | Path,
    data_dir: str | Path | None = None,
    *,
    strong_column: str | None = None,
    weak_column: str | None = None,
) -> Benchmark:
    """A benchmark by name (``mmlu``, ``gsm8k``, ``mt-bench``, ``arena-bench``, ``alpaca-eval``,
    ``mmlu-pro``) or a labelled file path
    (``strong_column``/``weak_column`` apply to labelled files only)."""
    text = str(name)
    if text.lower().endswith((".csv", ".jsonl")):
        return load_labelled_file(text, strong_column, weak_column)
    return _LOADERS[canonical_name(text)](data_dir)
