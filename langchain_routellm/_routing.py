"""What both LangChain wrappers share: message conversion, model names, batches.

Routing policy (which text is scored, what happens without one) is not here: it
lives in :mod:`shared_core.policy` and :class:`shared_core.engine.RoutingEngine`.
This module only turns LangChain messages into the ``(role, content)`` pairs the
engine reads, names models as tracing does, and runs a batch on decisions made
in one router call.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Sequence, Union

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import add_usage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list, get_executor_for_config
from langchain_core.runnables.utils import gather_with_concurrency

from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.escalation import AnswerView, ToolCall
from shared_core.policy import content_text
from shared_core.ledger import completion_token_bound, prompt_token_bound
from shared_core.routers import Decision
from shared_core.stream_usage import Refusals, aretried_stream, refuses_stream_options, retried_stream

#: Key of ``response_metadata`` (chat model) under which each answer records its decision.
DECISION_KEY = "routellm"

_CHAT_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant",
               "system": "system", "developer": "system", "tool": "tool", "function": "tool"}

class _Pending:
    """A decision made ahead of the call (``batch`` scores all inputs at once), keyed by
    the id of the object that made it; read once by that object's next call. Mutable, so
    that a call taking it in a copied context (an async child task) takes it for the
    batch too, which then knows whether any call used it."""

    __slots__ = ("owner", "decision")

    def __init__(self, owner: int, decision: Decision) -> None:
        self.owner, self.decision = owner, decision


_PENDING: ContextVar[_Pending | None] = ContextVar("routellm_pending_decision", default=None)


#: Call keyword under which a wrapper's ``invoke``/``stream`` pass the thread id to its own ``_generate``/``_stream``.
THREAD_KWARG = "routellm_thread_id"


def thread_of(config: Any) -> Any:
    """The caller's thread id, ``config["configurable"]["thread_id"]`` (LangGraph's key), or ``None``.

    Not checked here: the key is LangGraph's, and any value it allows must pass
    through when pinning is off; ``pin_threads`` checks it where it pins."""
    configurable = (config or {}).get("configurable") or {}
    return configurable.get("thread_id")


def message_view(message: BaseMessage, generation_info: dict[str, Any] | None = None) -> AnswerView:
    """A LangChain message as the escalation checks see it (:mod:`shared_core.escalation`)."""
    calls: list[ToolCall] = []
    for call in getattr(message, "tool_calls", None) or []:
        calls.append(ToolCall(call.get("name") or "", call.get("args")))
    for call in getattr(message, "invalid_tool_calls", None) or []:
        calls.append(ToolCall(call.get("name") or "", call.get("args")))  # raw string args: not an object
    metadata, info = message.response_metadata or {}, generation_info or {}
    finish = next((v for v in (metadata.get("finish_reason"), info.get("finish_reason"), metadata.get("stop_reason"),
                               metadata.get("done_reason")) if isinstance(v, str)), None)
    return AnswerView(text=content_text(message.content), tool_calls=tuple(calls), finish_reason=finish, raw=message)


def output_view(output: Any) -> AnswerView:
    """Any runnable output as a view: a message or a string is read; other values
    (a dict) have no text, only a user predicate judges them (``view.raw``)."""
    if isinstance(output, BaseMessage):
        return message_view(output)
    if isinstance(output, str):
        return AnswerView(text=output, raw=output)
    return AnswerView(text=None, raw=output)


def to_conversation(messages: Sequence[BaseMessage]) -> list[tuple[str, Any]]:
    """LangChain messages as the ``(role, content)`` pairs of :mod:`shared_core.policy`.

    human -> ``"user"``, ai -> ``"assistant"``, system -> ``"system"``, tool and
    function -> ``"tool"``; a ``ChatMessage`` keeps its role (``"human"`` and
    ``"ai"`` spelled the OpenAI way). Content is passed as it is, a string or a
    list of content blocks; a user message's text block whose ``text`` is not a
    string raises :class:`ConfigError` naming it.
    """
    pairs: list[tuple[str, Any]] = []
    for i, message in enumerate(messages):
        if isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
        elif isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, (ToolMessage, FunctionMessage)):
            role = "tool"
        elif isinstance(message, ChatMessage):
            role = _CHAT_ROLES.get(message.role.lower(), message.role.lower())
        elif isinstance(message, BaseMessage):
            role = _CHAT_ROLES.get(message.type, message.type)
        else:
            raise ConfigError(f"messages[{i}] must be a LangChain message, got {type(message).__name__}: {message!r}")
        if role == "user":
            _check_text_blocks(i, message.content)
        pairs.append((role, message.content))
    return pairs


def _check_text_blocks(i: int, content: Any) -> None:
    """A user message's text blocks must hold strings: one that does not would be
    left out of the routed text without a word (and fail at the provider)."""
    for j, block in enumerate(content if isinstance(content, list) else []):
        if isinstance(block, dict) and block.get("type") == "text" and not isinstance(block.get("text"), str):
            raise ConfigError(
                f"messages[{i}].content[{j}] is a text block whose text is {type(block.get('text')).__name__} "
                f"{block.get('text')!r}; expected a string"
            )


def model_name(model: Runnable) -> str:
    """A readable name for a model or runnable, as tracing would report it."""
    if isinstance(model, BaseChatModel):
        try:
            name = model._get_ls_params().get("ls_model_name")  # noqa: SLF001
        except Exception:  # a provider's ls params are best effort; fall back to attributes
            name = None
        for candidate in (name, getattr(model, "model_name", None), getattr(model, "model", None)):
            if isinstance(candidate, str) and candidate:
                return candidate
        return type(model).__name__
    return model.get_name()


def take_pending(owner: object) -> Decision | None:
    """The decision ``batch`` made for this call of ``owner``, if any (read once)."""
    pending = _PENDING.get()
    if pending is not None and pending.owner == id(owner):
        decision, pending.decision = pending.decision, None
        return decision
    return None


def drop_decision(owner: Any, decision: Decision | None) -> None:
    """A decision made ahead that no call will use (a pinned thread's call, a cache hit):
    free the budget reservation it holds, if any (:meth:`RoutedModel._spend`)."""
    spend = owner._spend(decision) if decision is not None else None  # noqa: SLF001
    if spend is not None:
        spend.release()


def set_pending(owner: object, decision: Decision | None) -> tuple[Any, _Pending | None]:
    """Make ``decision`` the pending one of ``owner``'s next call: ``(token, holder)``."""
    holder = _Pending(id(owner), decision) if decision is not None else None
    return _PENDING.set(holder), holder


def reset_pending(owner: Any, pending: tuple[Any, _Pending | None]) -> None:
    """End a batch item's call: restore the context, and free the reservation of a decision
    no call took (a cache hit answered, or the call failed before deciding)."""
    token, holder = pending
    _PENDING.reset(token)
    if holder is not None:
        drop_decision(owner, holder.decision)


# Batches: one router call, then each input's own call ---------------------------------
def decide_each(
    engine: RoutingEngine, inputs: Sequence[Any], convert: Callable[[Any], Any], errors: Any
) -> list[Decision | None]:
    """Decisions for all ``inputs`` in one router call. An input that ``convert``
    rejects (raising one of ``errors``) gets ``None``: its own call raises the
    error where it belongs."""
    conversations: list[Any] = []
    for item in inputs:
        try:
            conversations.append(convert(item))
        except errors:
            conversations.append(None)
    index = [i for i, c in enumerate(conversations) if c is not None]
    # An unreadable prompt gets None too (skip_invalid): its own call raises its PromptError.
    decided = engine.decide([conversations[i] for i in index], skip_invalid=True) if index else []
    out: list[Decision | None] = [None] * len(inputs)
    for i, d in zip(index, decided):
        out[i] = d
    return out


def run_batch(
    owner: object, inputs: list[Any], config: Union[RunnableConfig, list[RunnableConfig], None],
    decisions: list[Decision | None], invoke: Callable[..., Any], return_exceptions: bool, kwargs: dict[str, Any],
) -> list[Any]:
    """``invoke`` each input (in the config's executor) with its decision made ahead."""
    configs = get_config_list(config, len(inputs))

    def one(i: int) -> Any:
        pending = set_pending(owner, decisions[i])
        try:
            return invoke(inputs[i], configs[i], **kwargs)
        except Exception as exc:
            if return_exceptions:
                return exc
            raise
        finally:
            reset_pending(owner, pending)

    if len(inputs) == 1:
        return [one(0)]
    with get_executor_for_config(configs[0]) as executor:
        return list(executor.map(one, range(len(inputs))))


async def arun_batch(
    owner: object, inputs: list[Any], config: Union[RunnableConfig, list[RunnableConfig], None],
    decisions: list[Decision | None], ainvoke: Callable[..., Awaitable[Any]], return_exceptions: bool,
    kwargs: dict[str, Any],
) -> list[Any]:
    """Async :func:`run_batch`, at most the config's ``max_concurrency`` calls at a time."""
    configs = get_config_list(config, len(inputs))

    async def one(i: int) -> Any:
        pending = set_pending(owner, decisions[i])
        try:
            return await ainvoke(inputs[i], configs[i], **kwargs)
        except Exception as exc:
            if return_exceptions:
                return exc
            raise
        finally:
            reset_pending(owner, pending)

    return await gather_with_concurrency(configs[0].get("max_concurrency"), *(one(i) for i in range(len(inputs))))


#: The models whose endpoint refused ``stream_options``: asked no more (:func:`stream_asking_usage`).
_REFUSED = Refusals()


def _refusing(model: BaseChatModel, exc: BaseException) -> bool:
    """Whether a model's error before a stream is its endpoint's refusal of ``stream_options``
    (a strict OpenAI-compatible server: HTTP 400 or 422 naming the field); if so, the model
    is asked no more."""
    if refuses_stream_options(getattr(exc, "status_code", None), exc):
        _REFUSED.add(model)
        return True
    return False


def stream_asking_usage(model: BaseChatModel, stream: Callable[..., Iterator[Any]],
                        kwargs: dict[str, Any]) -> Iterator[Any]:
    """``stream(**kwargs)``, asking ``model`` for the stream's usage (:func:`asking_usage`);
    if its endpoint refuses that before the first chunk, the stream again as asked, and the
    model is not asked again."""
    asked = asking_usage(model, kwargs)
    if asked is kwargs:
        return stream(**kwargs)
    return retried_stream(stream(**asked), lambda: stream(**kwargs), partial(_refusing, model))


def astream_asking_usage(model: BaseChatModel, stream: Callable[..., AsyncIterator[Any]],
                         kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """:func:`stream_asking_usage` for an async stream."""
    asked = asking_usage(model, kwargs)
    if asked is kwargs:
        return stream(**kwargs)

    async def again() -> AsyncIterator[Any]:
        return stream(**kwargs)

    return aretried_stream(stream(**asked), again, partial(_refusing, model))


def can_stream(model: BaseChatModel, async_api: bool, kwargs: dict[str, Any]) -> bool:
    """Whether ``model`` streams a call with ``kwargs`` (not one that answers a stream call
    with a whole answer, which takes no stream keyword)."""
    return model._should_stream(async_api=async_api, **{**kwargs, "stream": True})  # noqa: SLF001


def asking_usage(model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A chosen model's stream keywords, asking it for the stream's usage where it takes a
    ``stream_usage`` keyword (ChatOpenAI and its kin; off by default for an endpoint other
    than OpenAI's) and neither you nor the call said whether to: a stream without usage
    cannot be priced (a ledger raises ``UsageError`` at its end) or charged to a budget.
    Set ``stream_usage=False`` on the model (or in the call) for an endpoint that refuses
    ``stream_options``."""
    if "stream_usage" not in getattr(type(model), "model_fields", {}) or "stream_usage" in kwargs:
        return kwargs
    if model in _REFUSED:
        return kwargs
    if "stream_usage" in model.model_fields_set or getattr(model, "stream_usage", None) is not None:
        return kwargs
    model_kwargs = getattr(model, "model_kwargs", None) or {}
    if any(isinstance(options, dict) and "include_usage" in options
           for options in (kwargs.get("stream_options"), model_kwargs.get("stream_options"))):
        return kwargs
    responses_api = getattr(model, "_use_responses_api", None)  # its streams report usage; no such keyword
    if callable(responses_api) and responses_api({**kwargs, **model_kwargs}):
        return kwargs
    return {**kwargs, "stream_usage": True}


# Budgets: a strong stream the caller left ----------------------------------------------
#: Content block types whose bytes bound their tokens (text); any other (an image, audio, a
#: file) leaves a prompt without a bound.
_TEXT_BLOCKS = frozenset({"text", "reasoning", "thinking", "tool_call", "tool_use", "function_call", "refusal"})


def token_bounds(model: Any, messages: Sequence[BaseMessage],
                 kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """Upper bounds on the prompt and completion tokens of ``model``'s call on ``messages``
    with ``kwargs``, or ``None`` where there is none: the prompt's bytes as JSON, every
    call keyword (tool schemas) with them (:func:`~shared_core.ledger.prompt_token_bound`;
    text only), and the call's max tokens (``max_completion_tokens`` or ``max_tokens`` of
    the call, else the model's own, as tracing reads it, else the most its model can answer,
    the ``max_output_tokens`` of its LangChain model profile) times ``n``."""
    limit = kwargs.get("max_completion_tokens", kwargs.get("max_tokens"))
    if limit is None and isinstance(model, BaseChatModel):
        try:
            limit = model._get_ls_params(**kwargs).get("ls_max_tokens")  # noqa: SLF001
        except Exception:  # noqa: BLE001 - a provider's ls params are best effort: then no bound
            limit = None
        profile = getattr(model, "profile", None)
        if limit is None and isinstance(profile, dict):
            limit = profile.get("max_output_tokens")
    completion = completion_token_bound(limit, kwargs.get("n", getattr(model, "n", None)))
    if completion is None:
        return None
    texts = [json.dumps(kwargs, default=str, ensure_ascii=False)]
    for message in messages:
        content = message.content
        blocks = [content] if isinstance(content, str) else content
        if not all(isinstance(b, str) or (isinstance(b, dict) and b.get("type") in _TEXT_BLOCKS) for b in blocks):
            return None
        texts.append(json.dumps(message.model_dump(exclude={"response_metadata", "usage_metadata"}),
                                default=str, ensure_ascii=False))
    return prompt_token_bound(texts, len(messages)), completion


class Leaving:
    """A stream's state, kept as it runs (the budget's reservations, the outcome at its first
    chunk, the model and call keywords that answer, the prompt, the usage so far), so that
    whichever generator sees the caller leave (the outer ``stream()``, or ``_stream`` when
    it is closed) charges the budget for it, once (:meth:`left`)."""

    __slots__ = ("spend", "outcome", "model", "kwargs", "messages", "usage")

    def __init__(self) -> None:
        self.spend = self.outcome = self.model = self.messages = self.usage = None
        self.kwargs: dict[str, Any] = {}

    def __repr__(self) -> str:  # shown in invocation params
        return "<routellm stream state>"

    def start(self, spend: Any, outcome: Any, model: Any, kwargs: dict[str, Any], messages: Any) -> None:
        self.spend, self.outcome, self.model, self.kwargs, self.messages = spend, outcome, model, kwargs, messages

    def add(self, chunk: Any) -> None:
        """Count a chunk's usage (a message chunk's ``usage_metadata``)."""
        message = getattr(chunk, "message", chunk)
        self.usage = add_usage(self.usage, getattr(message, "usage_metadata", None))

    def left(self) -> None:
        """The caller left the stream (closed or cancelled it) after its first chunk: if the
        strong model was answering under a budget, charge it, once
        (:meth:`~shared_core.controller.Reservations.leave_answer`): at its usage if the whole
        of it came, else at its bounds (:func:`token_bounds`; a prompt count that came is
        kept); with no bound (no max tokens, an image, a prompt that is not messages), the
        reserve, or with none the period, with a warning."""
        outcome, self.outcome = self.outcome, None  # charged once: the other generator finds none
        if outcome is None or self.spend is None:
            return
        usage = self.usage or {}
        messages, model, kwargs = self.messages, self.model, self.kwargs
        self.spend.leave_answer(outcome, (usage.get("input_tokens") or 0, usage.get("output_tokens") or 0),
                                lambda: None if messages is None else token_bounds(model, messages, kwargs))
