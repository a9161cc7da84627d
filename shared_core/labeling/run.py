"""Label prompts with an LLM judge: both answers, the judge's verdict, a battle.

:func:`label_prompts` writes into an output directory, append-only:

* ``battles.jsonl``: one battle a labelled prompt, in the layout ``routellm train
  --data`` reads (``prompt``, ``model_a`` = strong, ``model_b`` = weak, ``winner``),
  with the judge's verdicts beside it;
* ``unparsed.jsonl``: prompts whose judge answer held no well-formed verdict, kept
  with the judge's text and ``"status": "unparsed"``, never turned into a label;
* ``calls.jsonl``: every finished model call (answer text and tokens), so that a run
  killed between a prompt's calls repeats none of them when it resumes;
* ``run.json``: the models and the judging mode; resuming with other ones is refused.

Every line is written whole and flushed as soon as its call returns; a run started
again on the same directory skips finished prompts and reuses finished calls.
Prompts run ``concurrency`` at a time (each prompt's calls one after another), and
a call that fails with a retryable provider error (:func:`~shared_core.labeling.chat.is_retryable`)
is repeated up to ``retries`` times with exponential backoff. A prompt whose calls
still fail is reported in the summary and left for the next run; the run stops
once more than ``max_failures`` prompts have failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from shared_core.errors import ConfigError, DataError
from shared_core.files import jsonl_objects
from shared_core.labeling.chat import ChatFn, ChatReply, Messages, as_reply, is_retryable
from shared_core.labeling.judge import (
    GRADE_SYSTEM,
    GRADE_USER,
    MODES,
    PAIRWISE_SYSTEM,
    PAIRWISE_USER,
    grade_messages,
    grade_problem,
    grade_winner,
    pairwise_messages,
    pairwise_winner,
    parse_grade,
    parse_verdict,
    verdict_problem,
)

FORMAT_VERSION = 1
RUN_FILE = "run.json"
BATTLES_FILE = "battles.jsonl"
UNPARSED_FILE = "unparsed.jsonl"
CALLS_FILE = "calls.jsonl"
#: OpenAI's rule of thumb for English text, used where a provider reports no token count.
CHARS_PER_TOKEN = 4.0
#: Tokens of chat formatting a message adds (role markers), for estimates only.
MESSAGE_OVERHEAD_TOKENS = 4


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (characters / 4, at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def messages_tokens(messages: Messages) -> int:
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def judge_prompt_sha256(mode: str) -> str:
    """SHA-256 of the judge prompts of ``mode``, recorded in ``run.json``."""
    text = PAIRWISE_SYSTEM + PAIRWISE_USER if mode == "pairwise" else GRADE_SYSTEM + GRADE_USER
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Append-only JSONL -------------------------------------------------------------------
class Journal:
    """An append-only JSONL file written one whole, flushed line at a time (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        """The records so far; a last line cut short by a kill is dropped from the file."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a write cut short: keep whole lines only
            data = data[: data.rfind(b"\n") + 1]
            with self.path.open("r+b") as fh:
                fh.truncate(len(data))
        return jsonl_objects(data.decode("utf-8").splitlines(), self.path, hint="; it was not written by this tool")

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()


# Settings and results ------------------------------------------------------------------
@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens, by model name: ``{"gpt-4o": (2.5, 10.0)}`` (input, output)."""

    table: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for model, pair in self.table.items():
            ok = isinstance(pair, tuple) and len(pair) == 2 and all(
                isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0 for p in pair
            )
            if not ok:
                raise ConfigError(
                    f"price of {model!r} must be (input, output) dollars per million tokens, both >= 0; got {pair!r}"
                )

    @classmethod
    def from_json(cls, path: str | Path) -> "Prices":
        """Read ``{"model": {"input": 2.5, "output": 10}}`` (dollars per million tokens)."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"price table {str(p)!r} is not a readable JSON file: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"price table {str(p)!r} must be a JSON object of model -> {{input, output}}")
        table = {}
        for model, entry in raw.items():
            if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
                raise ConfigError(
                    f"price table {str(p)!r}: {model!r} must be {{\"input\": $/1M tokens, \"output\": $/1M tokens}}, "
                    f"got {entry!r}"
                )
            table[model] = (entry["input"], entry["output"])
        return cls(table)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        if model not in self.table:
            return None
        price_in, price_out = self.table[model]
        return (input_tokens * price_in + output_tokens * price_out) / 1e6


@dataclass
class Usage:
    """Calls made and tokens spent, by model (thread-safe counters)."""

    calls: dict[str, int] = field(default_factory=dict)
    input_tokens: dict[str, int] = field(default_factory=dict)
    output_tokens: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, model: str, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self.calls[model] = self.calls.get(model, 0) + 1
            self.input_tokens[model] = self.input_tokens.get(model, 0) + input_tokens
            self.output_tokens[model] = self.output_tokens.get(model, 0) + output_tokens

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_tokens(self) -> int:
        return sum(self.input_tokens.values()) + sum(self.output_tokens.values())

    def dollars(self, prices: Prices) -> float | None:
        costs = [prices.cost(m, self.input_tokens[m], self.output_tokens[m]) for m in self.calls]
        return None if not costs or any(c is None for c in costs) else float(sum(costs))


@dataclass
class LabelSummary:
    """What a :func:`label_prompts` run did."""

    output_dir: Path
    prompts: int
    duplicates: int
    already_done: int
    labelled: int
    unparsed: int
    failed: list[tuple[int, str]]
    usage: Usage
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "prompts": self.prompts,
            "duplicates": self.duplicates,
            "already_done": self.already_done,
            "labelled": self.labelled,
            "unparsed": self.unparsed,
            "failed": len(self.failed),
            "calls": self.usage.total_calls,
            "tokens": self.usage.total_tokens,
            "stopped_early": self.stopped_early,
        }


@dataclass(frozen=True)
class _Roles:
    strong: str
    weak: str
    judge: str


def _name(model: Any, given: str | None, role: str) -> str:
    name = given if given is not None else getattr(model, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(
            f"{role}_name must be a non-empty model name (the {role} model has no .name attribute), got {name!r}"
        )
    return name


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ConfigError("prompts must be a list of strings, got a single string; wrap it in a list")
    items = list(prompts)
    if not items:
        raise ConfigError("prompts must be a non-empty list of strings, got an empty list")
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"prompts[{i}] must be a non-empty string, got {p!r}")
    return items


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _run_config(roles: _Roles, mode: str, weak_wins_at: int) -> dict[str, Any]:
    config = {
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "strong": roles.strong,
        "weak": roles.weak,
        "judge": roles.judge,
        "judge_prompt_sha256": judge_prompt_sha256(mode),
    }
    if mode == "grade":
        config["weak_wins_at"] = weak_wins_at
    return config


def _open_run(output_dir: Path, config: dict[str, Any]) -> None:
    """Create the run directory, or check that a resumed one was started with ``config``."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output {str(output_dir)!r} exists and is not a directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    run_file = output_dir / RUN_FILE
    if run_file.is_file():
        try:
            saved = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(run_file)!r} is not JSON: {exc}") from None
        if saved != config:
            diff = {k: (saved.get(k), config.get(k)) for k in set(saved) | set(config) if saved.get(k) != config.get(k)}
            raise ConfigError(
                f"{str(output_dir)!r} holds a labelling run with other settings (saved, given): {diff}; "
                "resume with the same models and mode, or use a new output directory"
            )
    else:
        run_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def done_keys(output_dir: str | Path) -> set[str]:
    """Keys (:func:`prompt_key`) of the prompts a run in ``output_dir`` has finished (labelled or unparsed)."""
    directory = Path(output_dir)
    keys = set()
    for name in (BATTLES_FILE, UNPARSED_FILE):
        keys |= {r["prompt_sha"] for r in Journal(directory / name).read() if "prompt_sha" in r}
    return keys


# The labeller -----------------------------------------------------------------------
class _Labeller:
    def __init__(self, *, models, roles, mode, weak_wins_at, retries, backoff, retry_on, sleep, output_dir, prices):
        self.models = models  # {"strong": fn, "weak": fn, "judge": fn}
        self.roles = roles
        self.mode = mode
        self.weak_wins_at = weak_wins_at
        self.retries = retries
        self.backoff = backoff
        self.retry_on = retry_on
        self.sleep = sleep
        self.prices = prices
        self.usage = Usage()
        self.calls = Journal(output_dir / CALLS_FILE)
        self.battles = Journal(output_dir / BATTLES_FILE)
        self.unparsed = Journal(output_dir / UNPARSED_FILE)
        self.finished_calls = {(r["prompt_sha"], r["step"]): r for r in self.calls.read()}
        self.on_call: Callable[[], None] = lambda: None

    def call(self, key: str, step: str, role: str, messages: Messages) -> str:
        done = self.finished_calls.get((key, step))
        if done is not None:
            return done["text"]
        model_name = getattr(self.roles, role)
        reply = self._call_with_retries(self.models[role], messages, f"{role} model {model_name!r}")
        in_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else messages_tokens(messages)
        out_tokens = reply.completion_tokens if reply.completion_tokens is not None else estimate_tokens(reply.text)
        self.usage.add(model_name, in_tokens, out_tokens)
        self.calls.append({
            "prompt_sha": key,
            "step": step,
            "model": model_name,
            "text": reply.text,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        })
        self.on_call()
        return reply.text

    def _call_with_retries(self, model: ChatFn, messages: Messages, who: str) -> ChatReply:
        for attempt in range(self.retries + 1):
            try:
                return as_reply(model(messages), who)
            except Exception as exc:  # noqa: BLE001 - re-raised unless the predicate says retry
                if attempt == self.retries or not self.retry_on(exc):
                    raise
                self.sleep(self.backoff * (2**attempt) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")  # pragma: no cover

    def label(self, prompt: str) -> bool:
        """Label one prompt; True if it became a battle, False if the judge was unparsed."""
        key = prompt_key(prompt)
        user = [{"role": "user", "content": prompt}]
        strong = self.call(key, "strong", "strong", user)
        weak = self.call(key, "weak", "weak", user)
        base = {"prompt": prompt, "prompt_sha": key, "mode": self.mode, "judge": self.roles.judge}
        if self.mode == "pairwise":
            first = self.call(key, "judge_strong_first", "judge", pairwise_messages(prompt, strong, weak))
            second = self.call(key, "judge_strong_second", "judge", pairwise_messages(prompt, weak, strong))
            verdicts = [parse_verdict(first), parse_verdict(second)]
            if None in verdicts:
                self.unparsed.append({**base, "status": "unparsed", "judge_answers": [first, second],
                                      "verdicts": verdicts, "problems": [verdict_problem(first), verdict_problem(second)]})
                return False
            winner = pairwise_winner(verdicts[0], verdicts[1])
            extra = {"verdicts": verdicts}
        else:
            answer = self.call(key, "judge_grade", "judge", grade_messages(prompt, strong, weak))
            grade = parse_grade(answer)
            if grade is None:
                self.unparsed.append({**base, "status": "unparsed", "judge_answers": [answer], "grade": None,
                                      "problems": [grade_problem(answer)]})
                return False
            winner = grade_winner(grade, self.weak_wins_at)
            extra = {"grade": grade, "weak_wins_at": self.weak_wins_at}
        self.battles.append({
            "prompt": prompt,
            "model_a": self.roles.strong,
            "model_b": self.roles.weak,
            "winner": winner,
            **{k: v for k, v in base.items() if k != "prompt"},
            **extra,
        })
        return True


def label_prompts(
    prompts: Sequence[str],
    *,
    strong: ChatFn,
    weak: ChatFn,
    judge: ChatFn,
    output_dir: str | Path,
    strong_name: str | None = None,
    weak_name: str | None = None,
    judge_name: str | None = None,
    mode: str = "pairwise",
    weak_wins_at: int = 4,
    concurrency: int = 4,
    retries: int = 4,
    backoff: float = 1.0,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    max_failures: int = 10,
    prices: Prices | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> LabelSummary:
    """Label ``prompts`` with battles between ``strong`` and ``weak`` judged by ``judge``.

    The three models are chat callables (see :mod:`shared_core.labeling.chat`); their
    names default to their ``.name`` and are what the battles record (strong and weak
    must differ). Resumes a run already in ``output_dir`` (same names and mode).
    Returns a :class:`LabelSummary`; ``battles.jsonl`` trains a router with
    ``routellm train <router> --data <output_dir>/battles.jsonl``.
    """
    items = _check_prompts(prompts)
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    for role, fn in (("strong", strong), ("weak", weak), ("judge", judge)):
        if not callable(fn):
            raise ConfigError(f"{role} must be a chat model callable (messages -> reply), got {type(fn).__name__}")
    roles = _Roles(_name(strong, strong_name, "strong"), _name(weak, weak_name, "weak"), _name(judge, judge_name, "judge"))
    if roles.strong == roles.weak:
        raise ConfigError(
            f"strong and weak model are both named {roles.strong!r}; battles need two names (give strong_name/weak_name)"
        )
    _positive_int(weak_wins_at, "weak_wins_at")
    if not 1 <= weak_wins_at <= 5:
        raise ConfigError(f"weak_wins_at must be a grade from 1 to 5, got {weak_wins_at!r}")
    _positive_int(concurrency, "concurrency")
    _positive_int(retries, "retries", 0)
    _positive_int(max_failures, "max_failures", 0)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ConfigError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
    directory = Path(output_dir)
    _open_run(directory, _run_config(roles, mode, weak_wins_at))
    prices = prices or Prices()

    unique = list(dict.fromkeys(items))
    finished = done_keys(directory)
    todo = [p for p in unique if prompt_key(p) not in finished]
    labeller = _Labeller(
        models={"strong": strong, "weak": weak, "judge": judge}, roles=roles, mode=mode, weak_wins_at=weak_wins_at,
        retries=retries, backoff=float(backoff), retry_on=retry_on, sleep=sleep, output_dir=directory, prices=prices,
    )
    summary = LabelSummary(directory, len(items), len(items) - len(unique), len(unique) - len(todo), 0, 0, [],
                           labeller.usage)
    index = {p: i for i, p in reversed(list(enumerate(items)))}
    _run(labeller, todo, index, summary, concurrency, max_failures, progress)
    return summary


def _run(labeller: _Labeller, todo: list[str], index: dict[str, int], summary: LabelSummary,
         concurrency: int, max_failures: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="labelling", unit="prompt", disable=not progress or not todo)
    lock = threading.Lock()

    def show() -> None:
        usage = labeller.usage
        postfix = {"calls": usage.total_calls, "tokens": usage.total_tokens}
        dollars = usage.dollars(labeller.prices)
        if dollars is not None:
            postfix["$"] = f"{dollars:.4f}"
        with lock:
            bar.set_postfix(postfix, refresh=False)

    labeller.on_call = show
    pending = iter(todo)
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="routellm-label") as pool:
        try:
            while True:
                # at most `concurrency` prompts in flight; none started once the run must stop
                while len(running) < concurrency and not summary.stopped_early:
                    prompt = next(pending, None)
                    if prompt is None:
                        break
                    running[pool.submit(labeller.label, prompt)] = prompt
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    prompt = running.pop(future)
                    try:
                        ok = future.result()
                    except Exception as exc:  # noqa: BLE001 - one prompt's failure is that prompt's, not the run's
                        summary.failed.append((index[prompt], f"{type(exc).__name__}: {exc}"))
                        summary.stopped_early = summary.stopped_early or len(summary.failed) > max_failures
                    else:
                        summary.labelled += int(ok)
                        summary.unparsed += int(not ok)
                    with lock:
                        bar.update(1)
        finally:
            bar.close()


# Dry run ---------------------------------------------------------------------------
@dataclass
class CostEstimate:
    """Calls and tokens a run would spend, by model, and their price where the table has one."""

    prompts: int
    rows: list[dict[str, Any]]

    @property
    def dollars(self) -> float | None:
        costs = [r["dollars"] for r in self.rows]
        return None if any(c is None for c in costs) else float(sum(costs))

    def format(self) -> str:
        lines = [f"dry run: {self.prompts} prompt(s) to label; no call made"]
        lines.append(f"{'model':32} {'role':7} {'calls':>6} {'input tok':>10} {'output tok':>10} {'dollars':>10}")
        for r in self.rows:
            cost = "unknown" if r["dollars"] is None else f"{r['dollars']:.4f}"
            lines.append(
                f"{r['model'][:32]:32} {r['role']:7} {r['calls']:>6} {r['input_tokens']:>10} "
                f"{r['output_tokens']:>10} {cost:>10}"
            )
        total = self.dollars
        lines.append(
            "total: " + ("unknown (a model has no price: give --prices or --price MODEL=IN,OUT)" if total is None
                         else f"${total:.4f}")
            + f"  (tokens ~ characters/{CHARS_PER_TOKEN:g}; answers counted at their token limit, an upper bound)"
        )
        return "\n".join(lines)


def estimate_cost(
    prompts: Sequence[str],
    *,
    strong_name: str,
    weak_name: str,
    judge_name: str,
    mode: str = "pairwise",
    answer_tokens: int = 512,
    judge_tokens: int = 512,
    prices: Prices | None = None,
    output_dir: str | Path | None = None,
) -> CostEstimate:
    """What labelling ``prompts`` would cost, without calling anything.

    Input tokens are estimated from the text (:func:`estimate_tokens`); each answer
    is counted at ``answer_tokens`` and each judge answer at ``judge_tokens`` (the
    limits the calls are made with, so the estimate is an upper bound). Prompts
    already finished in ``output_dir`` are not counted.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    items = list(dict.fromkeys(_check_prompts(prompts)))
    if output_dir is not None and Path(output_dir).is_dir():
        finished = done_keys(output_dir)
        items = [p for p in items if prompt_key(p) not in finished]
    prices = prices or Prices()
    filler = "x" * int(answer_tokens * CHARS_PER_TOKEN)
    totals: dict[tuple[str, str], list[int]] = {}

    def add(model: str, role: str, messages: Messages, out_tokens: int) -> None:
        entry = totals.setdefault((model, role), [0, 0, 0])
        entry[0] += 1
        entry[1] += messages_tokens(messages)
        entry[2] += out_tokens

    for p in items:
        user = [{"role": "user", "content": p}]
        add(strong_name, "strong", user, answer_tokens)
        add(weak_name, "weak", user, answer_tokens)
        if mode == "pairwise":
            for _ in range(2):
                add(judge_name, "judge", pairwise_messages(p, filler, filler), judge_tokens)
        else:
            add(judge_name, "judge", grade_messages(p, filler, filler), judge_tokens)
    rows = [
        {"model": m, "role": r, "calls": c, "input_tokens": i, "output_tokens": o, "dollars": prices.cost(m, i, o)}
        for (m, r), (c, i, o) in totals.items()
    ]
    return CostEstimate(len(items), rows)


__all__ = [
    "BATTLES_FILE",
    "CALLS_FILE",
    "CostEstimate",
    "Journal",
    "LabelSummary",
    "Prices",
    "RUN_FILE",
    "UNPARSED_FILE",
    "Usage",
    "done_keys",
    "estimate_cost",
    "estimate_tokens",
    "label_prompts",
    "prompt_key",
]
