"""Evaluate routers on benchmarks under the fixed protocol; one result row per router.

Every benchmark table has a ``random`` row (the mean of the metrics of
:class:`~shared_core.routers.random.RandomRouter` over seeds 0-9) and an
``oracle`` row (routing by the true quality gain, :func:`metrics.oracle_curve`).

The protocol (see :mod:`shared_core.evaluation.benchmarks`): a router evaluated
on a benchmark must not have been trained on that benchmark's test prompts.
Each row says what its router was trained on (``trained_on``). A shipped
checkpoint whose training record shows it saw the test prompts (arena-bench:
the shipped routers train on it) is not evaluated as it is: the runner
retrains its recipe without them -- for arena-bench once per cross-validation
fold, each fold's prompts scored by the router trained without that fold --
through a *trainer*, by default :func:`shared_core.training.recipes.train_recipe`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from shared_core.errors import ArtifactError, ConfigError
from shared_core.evaluation import metrics as M
from shared_core.evaluation.benchmarks import Benchmark
from shared_core.routers import Router

#: Seeds of the random row.
RANDOM_SEEDS = tuple(range(10))
#: Pseudo-routers that are not loaded from anywhere.
BASELINES = ("random", "oracle")

#: ``trainer(recipe, *, data_dir, exclude_arena_questions, include_mmlu_train) -> Router``
Trainer = Callable[..., Router]
#: ``log(message)`` for progress lines.
Log = Callable[[str], None]


@dataclass(frozen=True)
class RouterResult:
    """One row of a benchmark table."""

    benchmark: str
    router: str
    trained_on: str
    n_prompts: int
    metrics: M.Metrics
    curve: M.RoutingCurve
    seconds: float
    retrained: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, with_curve: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "benchmark": self.benchmark,
            "router": self.router,
            "trained_on": self.trained_on,
            "retrained": self.retrained,
            "n_prompts": self.n_prompts,
            **self.metrics.to_dict(),
            "seconds": round(self.seconds, 3),
            **self.extra,
        }
        if with_curve:
            out["curve"] = self.curve.to_dict()
        return out


@dataclass(frozen=True)
class NotRun:
    """A router a benchmark was not run for, and why (a table cell that says so instead of a number)."""

    benchmark: str
    router: str
    reason: str
    #: One word for the table cell: ``not run (<cause>)``.
    cause: str = "cost"

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "router": self.router, "not_run": self.cause, "reason": self.reason}


@dataclass(frozen=True)
class BenchmarkResult:
    benchmark: Benchmark
    rows: list[RouterResult]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    #: Routers named for this benchmark but not run on it (see ``Evaluator.retrain_budget``).
    not_run: list[NotRun] = field(default_factory=list)

    def row(self, router: str) -> RouterResult:
        for r in self.rows:
            if r.router == router:
                return r
        raise KeyError(f"no row {router!r} in the {self.benchmark.name} results; rows: {[r.router for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark.describe(),
            "rows": [r.to_dict() for r in self.rows],
            "comparisons": self.comparisons,
            **({"not_run": [n.to_dict() for n in self.not_run]} if self.not_run else {}),
        }


# ---------------------------------------------------------------------------
# Which data a router saw
# ---------------------------------------------------------------------------
_TEST_WORDS = {
    "arena-bench": (r"arena-bench", r"arena_bench", r"arena-hard", r"arena"),
    "mmlu": (r"mmlu(?![ _-]?pro)",),
    "gsm8k": (r"gsm8k",),
    "mt-bench": (r"mt-bench", r"mt_bench", r"mtbench"),
    "alpaca-eval": (r"alpaca",),
    "mmlu-pro": (r"mmlu[ _-]?pro",),
}
#: The training source whose questions a cross-validated benchmark holds out.
_CV_SOURCES = {"arena-bench": "arena", "alpaca-eval": "alpaca_eval", "mmlu-pro": "mmlu_pro"}


def training_record(router: Router) -> dict[str, Any] | None:
    """The router's training record (``training_``, from its ``config.json``), if any."""
    record = getattr(router, "training_", None)
    return record if isinstance(record, dict) and record else None


def describe_training(record: dict[str, Any] | None) -> str:
    """One line naming the data a router was trained on, from its training record, and for a
    fine-tuned router (a record with ``base_model``) how it was fine-tuned."""
    data = describe_data(record)
    how = _fine_tuning(record) if record else ""
    return f"{data}; {how}" if how else data


def _fine_tuning(record: dict[str, Any]) -> str:
    """``fine-tuned <base> (top N layers) on n of N battles (k held out), e epoch(s)``, or ``""``
    when the record names no base model (the routers that are not fine-tuned)."""
    base = record.get("base_model")
    if not base:
        return ""
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    text = f"fine-tuned {base}"
    if settings.get("train_layers"):
        text += f" (top {settings['train_layers']} layers)"
    n, total = record.get("train_examples"), record.get("battles")
    if n:
        text += f" on {n} of {total} strong-vs-weak battles" if total else f" on {n} battles"
    if record.get("held_out"):
        text += f" ({record['held_out']} held out for early stopping)"
    epochs = record.get("epochs_run", settings.get("epochs"))
    if epochs:
        text += f", {epochs:g} epoch{'' if epochs == 1 else 's'}"
    return text


def describe_data(record: dict[str, Any] | None) -> str:
    """One line naming the data a router was trained on, from its training record."""
    if not record:
        return "unknown (no training record)"
    for key in ("trained_on", "data", "sources", "datasets", "source"):
        value = record.get(key)
        if value:
            if isinstance(value, dict):
                return ", ".join(f"{k}: {v}" for k, v in value.items())
            if isinstance(value, (list, tuple)):
                return ", ".join(map(str, value))
            return str(value)
    return "unknown (training record names no data)"


def saw_test_prompts(record: dict[str, Any] | None, benchmark: str) -> bool | None:
    """Whether a training record shows the benchmark's test prompts were trained on.

    ``None`` when the record says nothing about data. MMLU counts as seen unless
    the record says only MMLU-train was used; arena-bench counts as seen unless
    the record lists excluded arena questions.
    """
    if not record:
        return None
    text = describe_data(record).lower()
    if text.startswith("unknown"):
        return None
    words = _TEST_WORDS.get(benchmark)
    if words is None:
        return None
    if not any(re.search(w, text) for w in words):
        return False
    if benchmark == "mmlu":
        return not (re.search(r"mmlu[ _-]train", text) or record.get("mmlu_split") == "train")
    if benchmark == "arena-bench":
        held = record.get("excluded_questions")
        return not (record.get("exclude_arena_questions") or record.get("excluded_arena_questions")
                    or (isinstance(held, dict) and held.get("arena")))
    if benchmark in _CV_SOURCES:
        held = record.get("excluded_questions")
        return not (isinstance(held, dict) and held.get(_CV_SOURCES[benchmark]))
    return True


#: Keys of a training record that state how long training took, in seconds (the first found counts).
_TIME_KEYS = ("recipe_seconds", "seconds", "train_seconds", "fit_seconds")


def recorded_training_seconds(record: dict[str, Any] | None) -> float | None:
    """How long the router's training took by its record (``recipe_seconds``, else ``seconds``,
    ``train_seconds`` or ``fit_seconds``), or ``None`` when the record states no time."""
    for key in _TIME_KEYS:
        value = (record or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


# ---------------------------------------------------------------------------
# Loading routers
# ---------------------------------------------------------------------------
def _with_embedding_cache(router: Router) -> Router:
    """``router`` with the on-disk embedding cache in front of its embedder.

    Returns a shallow copy with its own embedder (and copies of its sub-routers);
    ``router`` itself is never changed: a shipped router is loaded once per
    process and shared by every wrapper, which must not start writing prompt
    vectors to the cache because an evaluation ran in the same process.
    """
    from shared_core.embeddings import CachedEmbedder, Embedder

    embedder = getattr(router, "embedder", None)
    wrap = isinstance(embedder, Embedder) and not isinstance(embedder, CachedEmbedder)
    subs = {name: getattr(router, name, None) for name in ("routers", "members", "experts")}
    subs = {name: items for name, items in subs.items() if isinstance(items, (list, tuple)) and items}
    if not wrap and not subs:
        return router
    clone = copy.copy(router)
    if wrap:
        clone.embedder = CachedEmbedder(embedder)
    for name, items in subs.items():
        setattr(clone, name, type(items)(_with_embedding_cache(r) if isinstance(r, Router) else r for r in items))
    return clone


def load_router_for_eval(spec: str | Path | Router, cache_embeddings: bool = True) -> Router:
    """A router by registry name, ``"default"``, path, or object, with cached embeddings.

    With ``cache_embeddings`` the result is a copy of the resolved router (see
    :func:`_with_embedding_cache`); the shipped router that serving shares is left as it is.
    """
    from shared_core.engine import resolve_router

    router = resolve_router(spec)
    return _with_embedding_cache(router) if cache_embeddings else router


def cache_provenance(spec: str | Path | Router) -> str:
    """``"; found in the cache at <dir> ..."`` for a registry name that ships no checkpoint and
    that the engine loads from the cache (:func:`shared_core.cache.trained_router_dir`), else ``""``."""
    if not isinstance(spec, str) or "/" in spec or spec.startswith((".", RECIPE_PREFIX)) or spec in BASELINES:
        return ""
    from shared_core.cache import trained_router_dir
    from shared_core.engine import shipped_aliases, shipped_router_names

    if spec in shipped_router_names() or spec in shipped_aliases():
        return ""
    path = trained_router_dir(spec)
    if not (path / "config.json").is_file():
        return ""
    try:
        shown = f"~/{path.relative_to(Path.home())}"
    except ValueError:  # not under the home directory
        shown = str(path)
    return f"; found in the cache at {shown}, where 'routellm train {spec} --recipe' saves it"


def default_trainer(recipe: str, **kwargs: Any) -> Router:
    """Retrain a shipped router's recipe with :func:`shared_core.training.recipes.train_recipe`."""
    try:
        from shared_core.training.recipes import train_recipe
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"cannot retrain router {recipe!r} without the test prompts: shared_core.training.recipes is missing ({exc})"
        ) from None
    return train_recipe(recipe, **{"progress": False, **kwargs})


#: Prefix of a router setting that means "train this recipe on all the data the protocol allows".
RECIPE_PREFIX = "recipe:"


def router_label(spec: str | Path | Router) -> str:
    if isinstance(spec, Router):
        return spec.name
    text = str(spec)
    if text.startswith(RECIPE_PREFIX):
        return text[len(RECIPE_PREFIX):]
    if "/" in text or text.startswith("."):
        return Path(text).name or text
    return text


def code_fingerprint() -> str:
    """SHA-256 over the source of the modules that decide what a retrained router is."""
    root = Path(__file__).resolve().parent.parent
    files = sorted(
        [*root.glob("training/*.py"), *root.glob("routers/*.py"), *root.glob("embeddings/*.py"),
         root / "datasets.py", root / "artifacts.py", root / "features.py"]
    )
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode("utf-8"))
            h.update(f.read_bytes())
    return h.hexdigest()


def default_model_cache() -> Path:
    """``<embedding cache dir>/eval-routers``: retrained routers kept between evaluations."""
    from shared_core.cache import default_cache_dir

    return default_cache_dir() / "eval-routers"


# ---------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------
class Evaluator:
    """Runs routers over benchmarks and returns result rows.

    ``loader`` turns a router setting into a router (default: the shipped
    checkpoints, registry names and paths of :func:`load_router_for_eval`;
    ``"recipe:<name>"`` trains recipe ``name`` on all the data the protocol allows);
    ``trainer`` retrains a recipe by name when a shipped router saw the test
    prompts (``model_cache``, a directory, keeps retrained routers between runs,
    keyed by recipe, excluded questions, data directory and the source code of
    the training and router modules, so that a code change retrains); ``retrain`` chooses when: ``"auto"`` (when the training record shows
    or does not rule out that it saw them), ``"never"`` (mark the row instead)
    or ``"always"``. ``retrain_budget`` (seconds, ``None``: no limit) bounds the retraining one
    row may cost, estimated as the retrainings it still needs (those neither done in this run
    nor in ``model_cache``) times the training time its router's record states
    (:func:`recorded_training_seconds`); a row over it is not run but reported as
    :class:`NotRun` with that estimate. A record that states no time is never over the budget.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        trainer: Trainer | None = None,
        loader: Callable[[str | Path], Router] | None = None,
        cache_embeddings: bool = True,
        random_seeds: Sequence[int] = RANDOM_SEEDS,
        n_bins: int = M.N_BINS,
        retrain: str = "auto",
        model_cache: str | Path | None = None,
        log: Log | None = None,
        retrain_budget: float | None = None,
    ) -> None:
        if retrain not in ("auto", "never", "always"):
            raise ConfigError(f"retrain must be 'auto', 'never' or 'always', got {retrain!r}")
        if retrain_budget is not None and (
            isinstance(retrain_budget, bool) or not isinstance(retrain_budget, (int, float))
            or not retrain_budget >= 0
        ):
            raise ConfigError(f"retrain_budget must be a number of seconds >= 0 or None, got {retrain_budget!r}")
        self.retrain_budget = retrain_budget
        if not random_seeds:
            raise ConfigError("random_seeds must name at least one seed")
        self.data_dir = data_dir
        self.trainer = trainer or default_trainer
        self.loader = loader
        self.cache_embeddings = cache_embeddings
        self.random_seeds = tuple(random_seeds)
        self.n_bins = n_bins
        self.retrain = retrain
        self.log = log or (lambda message: None)
        self.model_cache = Path(model_cache) if model_cache is not None else None
        self._routers: dict[str, Router] = {}
        self._retrained: dict[tuple, Router] = {}
        self._peers: dict[str, Callable[[Sequence[str]], np.ndarray]] = {}

    # Baselines -------------------------------------------------------------
    def random_row(self, bench: Benchmark) -> RouterResult:
        from shared_core.routers.random import RandomRouter

        start = time.perf_counter()
        results, curves = [], []
        for seed in self.random_seeds:
            curve = M.routing_curve(RandomRouter(seed).score(bench.prompts), bench.strong_quality,
                                    bench.weak_quality, n_bins=self.n_bins)
            curves.append(curve)
            results.append(M.curve_metrics(curve, bench.strong_mean, bench.weak_mean))
        # For the plot: the point-wise mean curve (all seeds give the same number of points
        # unless scores tie, which random scores of distinct prompts do not).
        if len({len(c.quality) for c in curves}) == 1:
            curve = M.RoutingCurve(
                thresholds=np.mean([c.thresholds for c in curves], axis=0),
                inclusive=curves[0].inclusive,
                strong_fraction=np.mean([c.strong_fraction for c in curves], axis=0),
                quality=np.mean([c.quality for c in curves], axis=0),
            )
        else:
            curve = curves[0]
        apgrs = [m.apgr for m in results]
        return RouterResult(
            bench.name, "random", "nothing (uniform scores)", bench.n, M.mean_metrics(results), curve,
            time.perf_counter() - start,
            extra={"seeds": list(self.random_seeds), "apgr_std": float(np.std(apgrs))},
        )

    def oracle_row(self, bench: Benchmark) -> RouterResult:
        start = time.perf_counter()
        curve = M.oracle_curve(bench.strong_quality, bench.weak_quality)
        return RouterResult(
            bench.name, "oracle", "the benchmark's own outcomes (upper bound)", bench.n,
            M.curve_metrics(curve, bench.strong_mean, bench.weak_mean), curve, time.perf_counter() - start,
        )

    def scores_row(
        self, bench: Benchmark, label: str, scores: Sequence[float], trained_on: str, seconds: float = 0.0,
        retrained: bool = False, **extra: Any,
    ) -> RouterResult:
        """A row from scores already computed (one per benchmark prompt)."""
        s = np.asarray(scores, dtype=float)
        if s.shape != (bench.n,):
            raise ConfigError(f"{label!r}: expected {bench.n} scores for {bench.name}, got shape {s.shape}")
        curve = M.routing_curve(s, bench.strong_quality, bench.weak_quality, n_bins=self.n_bins)
        return RouterResult(
            bench.name, label, trained_on, bench.n, M.curve_metrics(curve, bench.strong_mean, bench.weak_mean),
            curve, seconds, retrained, dict(extra),
        )

    # Routers ----------------------------------------------------------------
    def _router(self, spec: str | Path | Router) -> Router:
        if isinstance(spec, Router):
            return _with_embedding_cache(spec) if self.cache_embeddings else spec
        key = str(spec)
        if key not in self._routers:
            if key.startswith(RECIPE_PREFIX):
                # A router that ships no checkpoint: its recipe on everything the protocol allows.
                self._routers[key] = self._trained(key[len(RECIPE_PREFIX):], (), True)
            elif self.loader is not None:
                self._routers[key] = self.loader(spec)
            else:
                self._routers[key] = load_router_for_eval(spec, self.cache_embeddings)
        return self._routers[key]

    def _trained(
        self, recipe: str, exclude: tuple, include_mmlu_train: bool, fallback: str | None = None,
        source: str = "arena",
    ) -> Router:
        """The router of ``recipe`` trained without the questions ``exclude`` of training
        ``source`` (``arena``, ``alpaca_eval``, ``mmlu_pro``); ``fallback`` is the recipe of the
        router's class, used when ``recipe`` (a checkpoint name such as ``default``) has none."""
        key = (recipe, source, exclude, include_mmlu_train)
        if key not in self._retrained:
            started = time.perf_counter()
            kwargs: dict[str, Any] = dict(data_dir=self.data_dir, include_mmlu_train=include_mmlu_train)
            if source == "arena":
                kwargs["exclude_arena_questions"] = list(exclude)
            else:
                kwargs["exclude_arena_questions"] = []
                kwargs["exclude_questions"] = {source: list(exclude)}
            cached = self._cache_path(recipe, exclude, include_mmlu_train, source)
            router = None
            if cached is not None and (cached / "config.json").is_file():
                from shared_core.routers import load_router

                try:
                    router = load_router(cached)
                    self.log(f"  loaded retrained {recipe} (without {len(exclude)} {source} questions) from {cached}")
                except (ArtifactError, ConfigError, OSError) as exc:  # the cache only saves time
                    self.log(f"  warning: cannot read the cached router {str(cached)!r} ({exc}); retraining")
            if router is None:
                try:
                    router = self.trainer(recipe, **kwargs)
                except ConfigError as exc:
                    if fallback is None or fallback == recipe or "no training recipe" not in str(exc):
                        raise
                    self.log(f"  no recipe named {recipe!r}; retraining with the {fallback!r} recipe")
                    router = self.trainer(fallback, **kwargs)
                if cached is not None:
                    try:
                        router.save(cached)
                    except NotImplementedError:
                        pass
                    except (ArtifactError, OSError) as exc:  # a read-only cache: go on without it
                        self.log(f"  warning: cannot cache the retrained router in {str(cached)!r}: {exc}")
            self._retrained[key] = _with_embedding_cache(router) if self.cache_embeddings else router
            self.log(f"  retrained {recipe} without {len(exclude)} {source} questions in {time.perf_counter() - started:.1f}s")
        return self._retrained[key]

    def _cache_path(self, recipe: str, exclude: tuple, include_mmlu_train: bool, source: str = "arena") -> Path | None:
        if self.model_cache is None:
            return None
        key = {
            "recipe": recipe,
            "exclude": sorted(map(str, exclude)),
            **({} if source == "arena" else {"source": source}),
            "include_mmlu_train": include_mmlu_train,
            "data_dir": str(Path(self.data_dir).resolve()) if self.data_dir is not None else None,
            "code": code_fingerprint(),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:24]
        return self.model_cache / f"{recipe}-{digest}"

    def _over_budget(
        self, recipe: str, record: dict[str, Any] | None, held_out: list[tuple], source: str, bench: Benchmark,
    ) -> str | None:
        """Why retraining ``recipe`` once per entry of ``held_out`` costs more than the budget, or ``None``."""
        per = recorded_training_seconds(record)
        if self.retrain_budget is None or per is None:
            return None
        pending = [
            ex for ex in held_out
            if (recipe, source, ex, True) not in self._retrained
            and not ((path := self._cache_path(recipe, ex, True, source)) is not None and (path / "config.json").is_file())
        ]
        cost = len(pending) * per
        if cost <= self.retrain_budget:
            return None
        why = (f"{len(bench.folds)}-fold cross-validation" if bench.folds
               else f"without {bench.name}'s test prompts")
        return (
            f"{len(pending)} retraining{'s' if len(pending) != 1 else ''} of {recipe} ({why}) at "
            f"{per / 60:.0f} min each by its training record, about {cost / 60:.0f} min, over the retraining budget "
            f"of {self.retrain_budget / 60:.0f} min"
        )

    def router_row(self, bench: Benchmark, spec: str | Path | Router) -> RouterResult | NotRun:
        """The row of ``spec`` on ``bench``, or :class:`NotRun` when its retraining is over the budget."""
        label = router_label(spec)
        start = time.perf_counter()
        shipped = self._router(spec)
        record = training_record(shipped)
        seen = saw_test_prompts(record, bench.name)
        recipe = None
        if isinstance(spec, str) and "/" not in spec and not spec.startswith("."):
            recipe = spec[len(RECIPE_PREFIX):] if spec.startswith(RECIPE_PREFIX) else spec
            if not spec.startswith(RECIPE_PREFIX):
                from shared_core.engine import shipped_aliases

                recipe = shipped_aliases().get(recipe, recipe)  # "default" retrains the recipe of the router it names
        must_retrain = self.retrain == "always" or (self.retrain == "auto" and seen is not False and bool(bench.folds))
        if bench.name == "mmlu" and self.retrain == "auto" and seen is not False:
            must_retrain = True  # it saw MMLU-test, or its record cannot rule it out
        if bench.name in ("gsm8k", "mt-bench") and seen and self.retrain == "auto":
            raise ConfigError(
                f"router {label!r} was trained on {bench.name} ({describe_training(record)}); "
                f"it cannot be evaluated there and no recipe excludes {bench.name}"
            )
        if must_retrain and recipe is None:
            # A user's router from a path: no recipe to retrain; say what is known.
            scores = shipped.score(bench.prompts)
            return self.scores_row(
                bench, label, scores, describe_training(record) + " -- may include this benchmark's test prompts",
                time.perf_counter() - start, saw_test_prompts=seen,
            )
        if not must_retrain:
            scores = shipped.score(bench.prompts)
            trained_on = describe_training(record) + cache_provenance(spec)
            return self.scores_row(bench, label, scores, trained_on, time.perf_counter() - start)
        source = (bench.source or "arena") if bench.folds else "arena"
        held_out = [tuple(f) for f in bench.folds] if bench.folds else [()]
        reason = self._over_budget(recipe, record, held_out, source, bench)
        if reason is not None:
            return NotRun(bench.name, label, reason)
        if bench.folds:
            scores = np.empty(bench.n)
            for k, idx in enumerate(bench.fold_indices()):
                router = self._trained(recipe, tuple(bench.folds[k]), True, shipped.name, source)
                if len(idx):
                    scores[idx] = router.score([bench.prompts[i] for i in idx])
            desc = describe_training(training_record(router))
            trained_on = f"{desc}; retrained {len(bench.folds)}x, each without its test fold's {bench.name} questions"
        else:
            router = self._trained(recipe, (), True, shipped.name)
            trained_on = f"{describe_training(training_record(router))}; retrained without MMLU-test"
            scores = router.score(bench.prompts)
        return self.scores_row(bench, label, scores, trained_on, time.perf_counter() - start, retrained=True)

    def peer_row(self, bench: Benchmark, name: str) -> RouterResult:
        """A row for another project's router (:mod:`shared_core.evaluation.peers`), from its scores."""
        from shared_core.evaluation.peers import PEERS, peer_scorer

        if name not in self._peers:
            self._peers[name] = peer_scorer(name)
        start = time.perf_counter()
        scores = self._peers[name](bench.prompts)
        return self.scores_row(bench, name, scores, PEERS[name], time.perf_counter() - start)

    def evaluate(
        self, bench: Benchmark, routers: Iterable[str | Path | Router], peers: Sequence[str] = ()
    ) -> BenchmarkResult:
        """Rows for ``routers`` plus ``random`` and ``oracle`` (once each), sorted as given, then
        one row per peer router named in ``peers`` (before ``oracle``)."""
        rows: list[RouterResult] = []
        not_run: list[NotRun] = []
        specs = list(routers)
        if not any(str(s) == "random" for s in specs if not isinstance(s, Router)):
            specs = ["random", *specs]
        if not any(str(s) == "oracle" for s in specs if not isinstance(s, Router)):
            specs = [*specs, "oracle"]
        for spec in specs:
            t = time.perf_counter()
            if isinstance(spec, str) and spec == "random":
                row = self.random_row(bench)
            elif isinstance(spec, str) and spec == "oracle":
                row = self.oracle_row(bench)
            else:
                row = self.router_row(bench, spec)
            if isinstance(row, NotRun):
                self.log(f"  {bench.name:12} {row.router:14} not run ({row.cause}): {row.reason}")
                not_run.append(row)
                continue
            self.log(f"  {bench.name:12} {row.router:14} APGR {row.metrics.apgr:.3f}  ({time.perf_counter() - t:.1f}s)")
            rows.append(row)
        for name in peers:
            t = time.perf_counter()
            row = self.peer_row(bench, name)
            self.log(f"  {bench.name:12} {row.router:14} APGR {row.metrics.apgr:.3f}  ({time.perf_counter() - t:.1f}s)")
            rows.insert(len(rows) - 1 if rows and rows[-1].router == "oracle" else len(rows), row)
        comparisons = []
        if bench.name == "mt-bench" and bench.question_ids is not None:
            from shared_core.evaluation.commercial import commercial_comparison

            comparisons = commercial_comparison(bench, rows, self.data_dir)
        return BenchmarkResult(bench, rows, comparisons, not_run)
