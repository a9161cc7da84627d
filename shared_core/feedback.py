"""Feedback on routing decisions: what a user says about an answer, kept on disk.

A router trained on public benchmarks is mediocre on somebody's particular
traffic; the user's own outcomes are where quality comes from. An *outcome*
says how a routed call went, and becomes a *label* on the router's scale (the
strong model's chance of the better answer, as the training labels of
:mod:`shared_core.training.knn`):

========================  =====  =====================================================
outcome                   label  meaning
========================  =====  =====================================================
``"weak_ok"``             0.0    the weak model's answer was good enough
``"weak_failed"``         1.0    the weak model's answer was not good enough
``"strong"``              1.0    of both answers, the strong model's was better
``"weak"``                0.0    of both answers, the weak model's was better
``"tie"``                 0.5    both answers were as good
a number in [0, 1]        same   the chance that the strong model's answer is better
========================  =====  =====================================================

:func:`record_feedback` takes a decision (or its ``id``, found in the record of
every routed call: ``response_metadata["routellm"]["id"]`` in LangChain, the
``routellm`` entry of a LlamaIndex response's ``additional_kwargs``) or the
prompt text itself, appends a :class:`FeedbackRecord` to a :class:`FeedbackStore`
and, when the engine routes with a :class:`~shared_core.routers.feedback.FeedbackRouter`,
updates that router online.

The store is an append-only JSON-lines file, ``feedback.jsonl`` in the user cache
directory (``$ROUTELLM_CACHE_DIR`` or ``~/.cache/routellm``) or a path the user
gives, never inside the installed package. It holds the prompt *text* (a router
learns from it), so it is as private as the prompts are. Each record is one
``write`` of one line under a thread lock and an exclusive ``flock``, so threads
and processes appending to the same file never interleave lines.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from shared_core.cache import check_cache_dir
from shared_core.errors import ConfigError, DataError
from shared_core.routers.base import MAX_PROMPT_CHARS, Decision, check_prompt

try:  # POSIX; elsewhere the thread lock alone orders the writes of one process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STORE_NAME = "feedback.jsonl"
#: Labels of the named outcomes (see the module docstring).
OUTCOMES: dict[str, float] = {"weak_ok": 0.0, "weak_failed": 1.0, "strong": 1.0, "weak": 0.0, "tie": 0.5}
#: How many decisions an engine remembers the routing text of, for feedback by id.
RECENT_DECISIONS = 1024
_DECISION_ID = re.compile(r"^dec_[0-9a-f]{24}$")


class FeedbackWarning(UserWarning):
    """A line of a feedback file could not be read (for example cut short by a crash) and was skipped."""


def outcome_label(outcome: Any) -> float:
    """The label of ``outcome``: a named outcome of :data:`OUTCOMES` or a number in [0, 1]."""
    if isinstance(outcome, str):
        if outcome in OUTCOMES:
            return OUTCOMES[outcome]
        raise ConfigError(f"unknown feedback outcome {outcome!r}; expected one of {sorted(OUTCOMES)} "
                          "or a number in [0, 1] (the chance that the strong answer is better)")
    if isinstance(outcome, bool):
        raise ConfigError(f"feedback outcome {outcome!r} is ambiguous; pass 'weak_ok' or 'weak_failed'")
    if isinstance(outcome, (int, float)) and math.isfinite(outcome) and 0.0 <= outcome <= 1.0:
        return float(outcome)
    raise ConfigError(f"feedback outcome must be one of {sorted(OUTCOMES)} or a number in [0, 1], got {outcome!r}")


def is_decision_id(value: Any) -> bool:
    """Whether ``value`` has the form of a :attr:`Decision.id <shared_core.routers.Decision.id>`."""
    return isinstance(value, str) and bool(_DECISION_ID.match(value))


@dataclass(frozen=True)
class FeedbackRecord:
    """One piece of feedback: the routing text, its label and where they came from."""

    prompt: str
    label: float
    outcome: str | float
    decision_id: str | None = None
    router: str | None = None
    score: float | None = None
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Any) -> "FeedbackRecord":
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise DataError(f"a feedback record must be an object with a 'prompt' string, got {row!r}")
        fields = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        label = fields.get("label")
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0.0 <= label <= 1.0:
            raise DataError(f"a feedback record's label must be a number in [0, 1], got {label!r}")
        return cls(**fields)


class FeedbackStore:
    """An append-only JSON-lines file of :class:`FeedbackRecord`, safe for threads and processes.

    ``path`` is the file (a directory means ``<directory>/feedback.jsonl``);
    ``None`` means ``feedback.jsonl`` in the user cache directory. Nothing is read
    or created until the first :meth:`append` or :meth:`read`.

    >>> import tempfile
    >>> store = FeedbackStore(tempfile.mkdtemp())
    >>> store.append([FeedbackRecord("what is 2 + 2?", 0.0, "weak_ok")])
    >>> [r.outcome for r in store.read()]
    ['weak_ok']
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            self.path = check_cache_dir(None) / STORE_NAME
        elif isinstance(path, (str, Path)) and str(path).strip():
            given = Path(path).expanduser()
            if given.is_dir():
                given = given / STORE_NAME
            check_cache_dir(given.parent)  # refuses the installed package
            self.path = given.resolve()
        else:
            raise ConfigError(f"feedback store path must be a file or directory path or None, got {path!r}")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.path)!r})"

    def append(self, records: Iterable[FeedbackRecord]) -> None:
        """Append ``records`` in one write (all or, if the disk fails, none of their lines)."""
        items = list(records)
        for r in items:
            if not isinstance(r, FeedbackRecord):
                raise ConfigError(f"a feedback store holds FeedbackRecord objects, got {type(r).__name__}")
        if not items:
            return
        data = "".join(json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False) + "\n" for r in items)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                payload = data.encode("utf-8")
                written = 0
                while written < len(payload):
                    written += os.write(fd, payload[written:])
            finally:
                os.close(fd)  # closing releases the flock

    def read(self) -> list[FeedbackRecord]:
        """Every record, oldest first; ``[]`` if the file does not exist yet.

        A line that is not a valid record (a write cut short by a crash) is skipped
        with a :class:`FeedbackWarning` naming the file and the line.
        """
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.readlines()
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out.append(FeedbackRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                warnings.warn(f"{str(self.path)!r} line {number} is not a feedback record and was skipped: {exc}",
                              FeedbackWarning, stacklevel=2)
        return out


class DecisionLog:
    """The routing text and score of the latest ``maxlen`` decisions by id (thread-safe, in memory only).

    Only the part of a text a router reads (its first ``MAX_PROMPT_CHARS`` characters) is kept, so
    the log holds at most ``maxlen`` of those however large the prompts are.
    """

    def __init__(self, maxlen: int = RECENT_DECISIONS) -> None:
        self.maxlen = maxlen
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, decision_id: str, text: str, score: float) -> None:
        with self._lock:
            self._items[decision_id] = (text[:MAX_PROMPT_CHARS], score)
            while len(self._items) > self.maxlen:
                self._items.popitem(last=False)

    def get(self, decision_id: str) -> tuple[str, float] | None:
        """``(text, score)`` of the decision, or ``None`` if it is not (or no longer) here."""
        with self._lock:
            return self._items.get(decision_id)


def append_feedback(store: FeedbackStore, prompt: Any, outcome: Any, *, decision_id: str | None = None,
                    router: str | None = None, score: float | None = None) -> FeedbackRecord:
    """Check ``prompt`` and ``outcome``, append their record to ``store`` and return it."""
    label = outcome_label(outcome)
    text = check_prompt(prompt)
    if not text.strip():
        raise ConfigError("feedback needs a prompt with text, got an empty or blank string")
    if not isinstance(store, FeedbackStore):
        raise ConfigError(f"store must be a FeedbackStore or None, got {type(store).__name__}")
    record = FeedbackRecord(text, label, outcome, decision_id, router, score, time.time())
    store.append([record])
    return record


def record_feedback(engine: Any, target: Decision | str, outcome: Any, *, store: FeedbackStore | None = None
                    ) -> FeedbackRecord:
    """Record ``outcome`` for ``target`` and return the record written.

    ``target`` is a :class:`~shared_core.routers.Decision` or its ``id`` (one of the
    engine's latest :data:`RECENT_DECISIONS` decisions), or the routing text
    itself (the last user message, as :mod:`shared_core.policy` picks it). The
    record goes to ``store``, else to the store of the engine's
    :class:`~shared_core.routers.feedback.FeedbackRouter`, else to the default
    store in the user cache directory. A ``FeedbackRouter`` learns it at once.
    """
    from shared_core.routers.feedback import FeedbackRouter

    outcome_label(outcome)  # a bad outcome fails before the lookup
    decision_id, score = None, None
    if isinstance(target, Decision):
        decision_id, score = target.id, target.score
    elif is_decision_id(target):
        decision_id = target
    if decision_id is not None:
        found = engine.recent.get(decision_id)
        if found is None:
            raise ConfigError(
                f"decision {decision_id!r} is not among this engine's latest {engine.recent.maxlen} scored "
                "decisions (a decision without text to score cannot be learned from); pass the prompt instead"
            )
        prompt, score = found
    else:
        prompt = target
    router = engine.router
    learner = router if isinstance(router, FeedbackRouter) else None
    if store is None:
        store = learner.store if learner is not None and learner.store is not None else FeedbackStore()
    record = append_feedback(store, prompt, outcome, decision_id=decision_id, router=router.label, score=score)
    if learner is not None:
        learner.add([record.prompt], [record.label])
    return record
