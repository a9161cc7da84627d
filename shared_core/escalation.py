"""Checks on a weak model's answer that send the same call to the strong model.

Opt-in (``escalate_on=...`` in :class:`~shared_core.settings.RoutingSettings`):
after the weak model answers, each check looks at a small, framework-neutral
view of the answer, :class:`AnswerView` (its text, tool calls, finish reason and,
for structured output, what was parsed or the parse error), and at what the call
asked for, :class:`CallContext` (the bound tools and their JSON schemas, whether
a tool call was required, an output schema). The first answer that fails a
check is rejected and the call goes to the strong model, through the one attempt
loop of :mod:`shared_core.attempts` (``check`` / ``escalate_to``). The wrappers
only turn their responses into an :class:`AnswerView`.

The checks, by name:

``"empty"``
    no text (only whitespace), no tool call, nothing parsed.
``"refusal"``
    the text (its first 400 characters) matches a refusal pattern
    (:data:`REFUSAL_PATTERNS`, or your own: ``Refusal([r"^nope"])``).
``"length"``
    the model stopped because it ran out of tokens (finish reason ``length``,
    ``max_tokens``, ``MAX_TOKENS``, ...).
``"tool_calls"``
    a tool call names no bound tool, or its arguments are not a JSON object
    that fits the tool's parameter schema (required keys, types, enums, no
    unknown keys where ``additionalProperties`` is false; ``$ref`` is not
    followed); or the call required a tool call and there is none.
``"structured"``
    structured output that did not parse (the view carries the parse error);
    structured output bound as a tool (LangChain's ``with_structured_output``)
    without a call of that tool or with arguments that do not fit its schema; or,
    with an output schema in the context and no tool call, text that is not
    JSON fitting that schema (a pydantic model class or a JSON schema).

Any callable is a user check: ``predicate(view)`` returning ``True`` (reject),
``False``/``None`` (accept) or a string (reject, with that reason).

Example:
    >>> checks = AnswerChecks.from_spec(["empty", "length", "tool_calls"])
    >>> checks.names
    ('empty', 'length', 'tool_calls')
    >>> checks.reason(AnswerView(text="  "))
    'empty: the answer has no text and no tool call'
    >>> context = CallContext(tools={"add": {"type": "object", "properties": {"a": {"type": "integer"}},
    ...                                       "required": ["a"]}})
    >>> checks.reason(AnswerView(text="", tool_calls=(ToolCall("add", {"a": "one"}),)), context)
    "tool_calls: tool call 'add': args.a must be integer, got str 'one'"
    >>> checks.reason(AnswerView(text="4", finish_reason="stop")) is None
    True
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple, Union

from shared_core.errors import ConfigError

__all__ = [
    "CHECK_NAMES",
    "REFUSAL_PATTERNS",
    "AnswerChecks",
    "AnswerView",
    "CallContext",
    "Empty",
    "Length",
    "Predicate",
    "Refusal",
    "Structured",
    "ToolCall",
    "ToolCalls",
    "check_name",
    "parse_json_text",
    "schema_problems",
]


# What a check sees --------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """One tool call of an answer: the tool's name and its arguments (a dict, or
    the raw string when the model's arguments did not parse as JSON)."""

    name: str
    args: Any = None


@dataclass(frozen=True)
class AnswerView:
    """A model's answer as the checks see it.

    ``text`` is ``None`` when the answer is not text at all (a runnable's dict
    output): the text checks then pass and only a user predicate judges it,
    reading ``raw``. ``parsed`` is the structured output, ``parse_error`` the
    error raised parsing it.
    """

    text: Optional[str] = ""
    tool_calls: Tuple[ToolCall, ...] = ()
    finish_reason: Optional[str] = None
    parsed: Any = None
    parse_error: Optional[BaseException] = None
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class CallContext:
    """What the call asked for: bound tools (name -> JSON schema of the
    parameters), whether a tool call was required, whether those tools are a
    structured output schema (``structured_as_tool``), and an output schema (a
    pydantic model class or a JSON schema) for structured output given as text."""

    tools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tool_required: bool = False
    structured_as_tool: bool = False
    output_schema: Any = None


# The checks -------------------------------------------------------------------------------
class Empty:
    """Reject an answer with no text, no tool call and nothing parsed."""

    name = "empty"

    def __call__(self, view: AnswerView, context: CallContext) -> Optional[str]:
        if view.text is None or view.tool_calls or view.parsed is not None:
            return None
        return None if view.text.strip() else "the answer has no text and no tool call"


#: Refusals as models phrase them (case-insensitive, searched in the first 400 characters).
REFUSAL_PATTERNS: Tuple[str, ...] = (
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:'|no)t|cannot|am unable to|won't)\b",
    r"^\s*I (?:can(?:'|no)?t|cannot|won't|will not|am unable to|am not able to) "
    r"(?:help|assist|comply|provide|do that|answer|fulfil|fulfill)",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|comply|provide|answer)",
    r"^\s*(?:Sorry|I apologi[sz]e),? (?:but )?I (?:can(?:'|no)?t|cannot|won't)",
    r"\bAs an AI(?: language model)?,? I (?:can(?:'|no)?t|cannot|don't|do not)",
)


class Refusal:
    """Reject an answer whose text matches a refusal pattern (``re`` syntax,
    case-insensitive, multi-line, searched in the first ``head`` characters)."""

    name = "refusal"

    def __init__(self, patterns: Iterable[str] = REFUSAL_PATTERNS, head: int = 400) -> None:
        if isinstance(patterns, str):
            raise ConfigError(f"refusal patterns must be a list of regular expressions, got one string {patterns!r}")
        self.patterns = tuple(patterns)
        if not self.patterns:
            raise ConfigError("refusal patterns must not be empty")
        compiled = []
        for p in self.patterns:
            if not isinstance(p, str):
                raise ConfigError(f"refusal pattern must be a string, got {type(p).__name__}: {p!r}")
            try:
                compiled.append(re.compile(p, re.IGNORECASE | re.MULTILINE))
            except re.error as exc:
                raise ConfigError(f"refusal pattern {p!r} is not a valid regular expression: {exc}") from None
        self._compiled = tuple(compiled)
        if isinstance(head, bool) or not isinstance(head, int) or head < 1:
            raise ConfigError(f"head must be a positive number of characters, got {head!r}")
        self.head = head

    def __call__(self, view: AnswerView, context: CallContext) -> Optional[str]:
        if not view.text or view.tool_calls:
            return None
        text = view.text[: self.head]
        for pattern in self._compiled:
            match = pattern.search(text)
            if match:
                return f"the answer is a refusal ({match.group(0).strip()!r})"
        return None


#: Finish reasons that mean "ran out of tokens" (OpenAI, Anthropic, Gemini, llama.cpp, ...).
LENGTH_REASONS = frozenset({"length", "max_tokens", "max_output_tokens", "model_length", "token_limit"})


class Length:
    """Reject an answer cut off by the token limit."""

    name = "length"

    def __call__(self, view: AnswerView, context: CallContext) -> Optional[str]:
        reason = view.finish_reason
        if isinstance(reason, str) and reason.strip().lower() in LENGTH_REASONS:
            return f"the answer was cut off (finish reason {reason!r})"
        return None


class ToolCalls:
    """Reject tool calls that name no bound tool or whose arguments do not fit its schema."""

    name = "tool_calls"

    def __call__(self, view: AnswerView, context: CallContext) -> Optional[str]:
        if not view.tool_calls:
            if context.tool_required and context.tools:
                return f"a tool call was required (tools: {', '.join(sorted(context.tools))}) and there is none"
            return None
        if not context.tools:
            return None  # nothing bound to compare with (a tool call the caller did not describe)
        for call in view.tool_calls:
            schema = context.tools.get(call.name)
            if schema is None:
                return f"tool call names {call.name!r}, which is not a bound tool ({', '.join(sorted(context.tools))})"
            problems = schema_problems(call.args, schema or {"type": "object"}, "args")
            if problems:
                return f"tool call {call.name!r}: {problems[0]}"
        return None


class Structured:
    """Reject structured output that did not parse or does not fit the output schema."""

    name = "structured"

    def __call__(self, view: AnswerView, context: CallContext) -> Optional[str]:
        if view.parse_error is not None:
            return f"structured output did not parse: {type(view.parse_error).__name__}: {view.parse_error}"
        if context.structured_as_tool and context.tools:
            why = ToolCalls()(view, replace(context, tool_required=True))
            return f"structured output: {why}" if why else None
        schema = context.output_schema
        if schema is None or view.tool_calls or view.parsed is not None or view.text is None:
            return None
        try:
            value = parse_json_text(view.text)
        except ValueError as exc:
            return f"structured output is not JSON: {exc}"
        if isinstance(schema, type) and hasattr(schema, "model_validate"):
            from pydantic import ValidationError

            try:
                schema.model_validate(value)
            except (ValidationError, ValueError, TypeError) as exc:
                first = str(exc).splitlines()
                return f"structured output does not fit {schema.__name__}: {' '.join(first[:3])}"
            return None
        problems = schema_problems(value, schema, "output")
        return f"structured output does not fit its schema: {problems[0]}" if problems else None


class Predicate:
    """A user check: ``fn(view)`` returns ``True`` or a reason to reject, ``False``/``None`` to accept."""

    def __init__(self, fn: Callable[[AnswerView], Any], name: Optional[str] = None) -> None:
        if not callable(fn):
            raise ConfigError(f"a predicate must be callable, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def __call__(self, view: AnswerView, context: CallContext) -> Optional[str]:
        verdict = self.fn(view)
        if verdict is None or verdict is False:
            return None
        if verdict is True:
            return "the predicate rejected the answer"
        if isinstance(verdict, str) and verdict:
            return verdict
        raise ConfigError(f"predicate {self.name!r} must return a bool, None or a reason string, got {verdict!r}")


_BY_NAME = {"empty": Empty, "refusal": Refusal, "length": Length, "tool_calls": ToolCalls, "structured": Structured}
#: The named checks, in the order ``"all"`` applies them.
CHECK_NAMES: Tuple[str, ...] = tuple(_BY_NAME)

CheckSpec = Union[None, str, Callable[..., Any], Sequence[Union[str, Callable[..., Any]]]]


class AnswerChecks:
    """An ordered set of checks; :meth:`reason` is the first rejection, or ``None``."""

    def __init__(self, checks: Sequence[Any]) -> None:
        self.checks = tuple(checks)
        if not self.checks:
            raise ConfigError("escalate_on needs at least one check")

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.checks)

    @classmethod
    def from_spec(cls, spec: CheckSpec) -> Optional["AnswerChecks"]:
        """Checks from the ``escalate_on`` setting: ``None`` (off), ``"all"``, a check
        name, a check object, a predicate, or a list of these."""
        if spec is None:
            return None
        if isinstance(spec, AnswerChecks):
            return spec
        items = list(CHECK_NAMES) if spec == "all" else (
            [spec] if isinstance(spec, str) or callable(spec) else spec)
        if not isinstance(items, (list, tuple)):
            raise ConfigError(
                f"escalate_on must be None, 'all', a check name, a predicate or a list of them, got "
                f"{type(spec).__name__}: {spec!r}"
            )
        checks = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                if item not in _BY_NAME:
                    raise ConfigError(
                        f"escalate_on[{i}] is {item!r}; known checks: {', '.join(CHECK_NAMES)} (or a predicate)")
                checks.append(_BY_NAME[item]())
            elif isinstance(item, (Empty, Refusal, Length, ToolCalls, Structured, Predicate)):
                checks.append(item)
            elif callable(item):
                checks.append(Predicate(item))
            else:
                raise ConfigError(
                    f"escalate_on[{i}] must be a check name ({', '.join(CHECK_NAMES)}), a check or a predicate, "
                    f"got {type(item).__name__}: {item!r}"
                )
        return cls(checks)

    def reason(self, view: AnswerView, context: Optional[CallContext] = None) -> Optional[str]:
        """``"<check>: <why>"`` for the first check that rejects ``view``, else ``None``."""
        context = context or CallContext()
        for check in self.checks:
            why = check(view, context)
            if why:
                return f"{check.name}: {why}"
        return None


def check_name(reason: str) -> str:
    """The name of the check that gave ``reason`` (:meth:`AnswerChecks.reason`'s ``"<check>: <why>"``)."""
    return reason.split(":", 1)[0]


# JSON helpers -------------------------------------------------------------------------------
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def parse_json_text(text: str) -> Any:
    """The JSON value of ``text`` (a Markdown code fence around it is allowed)."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at position {exc.pos} of {body[:60]!r}") from None


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, (list, tuple)),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def schema_problems(value: Any, schema: Mapping[str, Any], path: str = "value") -> list[str]:
    """What is wrong with ``value`` under a JSON schema (a practical subset: ``type``,
    ``enum``, ``const``, ``required``, ``properties``, ``additionalProperties: false``,
    ``items``, ``anyOf``/``oneOf``; ``$ref`` and formats are not checked). Empty: fits."""
    if not isinstance(schema, Mapping) or "$ref" in schema:
        return []
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            if all(schema_problems(value, option, path) for option in options):
                return [f"{path} fits none of the {key} options, got {_show(value)}"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return [f"{path} must be {' or '.join(kinds)}, got {_show(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path} must be one of {schema['enum']!r}, got {value!r}"]
    if "const" in schema and value != schema["const"]:
        return [f"{path} must be {schema['const']!r}, got {value!r}"]
    problems: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        missing = [k for k in schema.get("required") or [] if k not in value]
        if missing:
            problems.append(f"{path} misses required key(s) {missing}")
        if schema.get("additionalProperties") is False:
            extra = sorted(k for k in value if k not in props)
            if extra:
                problems.append(f"{path} has unknown key(s) {extra}; allowed: {sorted(props)}")
        for key, sub in props.items():
            if key in value:
                problems.extend(schema_problems(value[key], sub, f"{path}.{key}"))
    elif isinstance(value, (list, tuple)) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problems.extend(schema_problems(item, schema["items"], f"{path}[{i}]"))
    elif schema.get("type") == "object" and not isinstance(value, dict):  # pragma: no cover - caught by type
        problems.append(f"{path} must be an object, got {_show(value)}")
    return problems


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]
