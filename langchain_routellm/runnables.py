"""``RouteLLMRunnable``: route between two arbitrary runnables with the same routers.

For the general case where the two sides are not chat models: a cheap direct
answer against a full RAG chain, a small chain against an agent. The decision is
made by the same :class:`shared_core.engine.RoutingEngine` as ``RouteLLMChat``,
recorded in the chosen child run's metadata (``metadata["routellm"]``, visible
to callbacks and tracing) and, when the output is a message, in its
``response_metadata["routellm"]``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, AsyncIterator, Iterator, Optional, Sequence, Union

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, BaseMessageChunk, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
    run_in_executor,
)
from pydantic import ConfigDict, Field

from langchain_routellm._routing import (
    DECISION_KEY,
    Leaving,
    arun_batch,
    astream_asking_usage,
    can_stream,
    decide_each,
    drop_decision,
    model_name,
    output_view,
    run_batch,
    stream_asking_usage,
    take_pending,
    thread_of,
    to_conversation,
)
from shared_core.attempts import Attempts, Failure
from shared_core.engine import decision_record
from shared_core.errors import ConfigError
from shared_core.routers import Decision, Role
from shared_core.escalation import AnswerView
from shared_core.settings import RoutedModel, ladder_ends, pop_timeout

#: One attempt: the role and the runnable that plays it.
_Entry = tuple[Role, Runnable]


class RouteLLMRunnable(RoutedModel, RunnableSerializable[Any, Any]):
    """Send each input to the ``strong`` or the ``weak`` runnable.

    The text routed on: a string input itself; for messages (or message-likes:
    ``(role, content)`` pairs, role/content dicts) or a prompt value, the last
    human message (:mod:`shared_core.policy`); for a dict, the value
    under ``input_key`` (or its only string value).

    Key init args: ``strong``, ``weak`` (any runnables), ``input_key``, and the
    routing settings of :class:`shared_core.settings.RoutingSettings`, as for
    :class:`~langchain_routellm.RouteLLMChat`: ``router``, ``threshold``,
    ``strong_fraction``, ``calibration_prompts``, ``on_no_text``, ``fallback``,
    ``fallback_on``, ``timeout`` (also a call argument: ``invoke(x, timeout=5)``),
    ``escalate_on`` (checks on the weak runnable's output: a message or a string
    is read as text; any other output only by a predicate, ``view.raw``),
    ``route_on``, ``pin_threads`` (thread id from ``config["configurable"]["thread_id"]``)
    and ``ladder`` (runnables cheapest first instead of ``strong``/``weak``).

    Example:
        .. code-block:: python

            >>> from langchain_core.runnables import RunnableLambda
            >>> from langchain_routellm import RouteLLMRunnable
            >>> chain = RouteLLMRunnable(
            ...     strong=RunnableLambda(lambda q: f"RAG answer to {q['question']}", name="rag"),
            ...     weak=RunnableLambda(lambda q: f"direct answer to {q['question']}", name="direct"),
            ...     router="random", threshold=0.5, input_key="question",
            ... )
            >>> chain.route({"question": "What is 2 + 2?"}).role.value
            'strong'
            >>> chain.invoke({"question": "What is 2 + 2?"})
            'RAG answer to What is 2 + 2?'
            >>> chain.invoke({"question": "Say hi"})
            'direct answer to Say hi'
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    strong: Runnable = Field(description="Runnable for the inputs the router judges hard.")
    weak: Runnable = Field(description="Runnable for the inputs the router judges easy.")
    input_key: Optional[str] = Field(default=None, description="Key of a dict input holding the text to route on.")

    def __init__(self, *, strong: Optional[Runnable] = None, weak: Optional[Runnable] = None, **kwargs: Any) -> None:
        def check(name: str, runnable: Any) -> None:
            if not isinstance(runnable, Runnable):
                raise ConfigError(f"{name} must be a LangChain Runnable, got {type(runnable).__name__}: {runnable!r}")

        strong, weak = ladder_ends(strong, weak, kwargs, check)
        super().__init__(strong=strong, weak=weak, **kwargs)

    # Routing -------------------------------------------------------------------
    def _conversation(self, value: Any) -> list[tuple[str, Any]]:
        if isinstance(value, str):
            return [("user", value)]
        if isinstance(value, PromptValue):
            return to_conversation(value.to_messages())
        if isinstance(value, BaseMessage):
            return to_conversation([value])
        if isinstance(value, (list, tuple)):
            # Message-like items too ((role, content) pairs, role/content dicts, strings), as a chat model reads them.
            try:
                return to_conversation(convert_to_messages(value))
            except (ValueError, TypeError, NotImplementedError) as exc:
                raise ConfigError(
                    f"cannot route a {type(value).__name__} input that is not a list of messages "
                    f"(messages, (role, content) pairs, role/content dicts or strings): {exc}"
                ) from None
        if isinstance(value, dict):
            if self.input_key is not None:
                if self.input_key not in value:
                    raise ConfigError(f"input has no key {self.input_key!r} (input_key); keys: {sorted(value)}")
                return self._conversation(value[self.input_key])
            texts = [k for k, v in value.items() if isinstance(v, str)]
            if len(texts) == 1:
                return [("user", value[texts[0]])]
            raise ConfigError(
                f"cannot tell which key of a dict input to route on (string keys: {texts}); set input_key"
            )
        raise ConfigError(
            f"cannot route an input of type {type(value).__name__}; expected a string, messages, "
            "a prompt value or a dict with input_key"
        )

    def route(self, input: Any) -> Decision:  # noqa: A002
        """The decision for ``input``, calling neither runnable (a controller previews it:
        nothing is counted or reserved for it)."""
        return self.engine.decide_one(self._conversation(input), observe=False)

    async def aroute(self, input: Any) -> Decision:  # noqa: A002
        return await run_in_executor(None, self.route, input)

    def _decide(self, input: Any, thread: Any = None) -> Decision:  # noqa: A002
        pending = take_pending(self)
        pinned = self._pinned(thread)
        if pinned is not None:
            drop_decision(self, pending)  # the thread's pin wins over the batch's decision
            return pinned
        return pending if pending is not None else self.engine.decide_one(self._conversation(input))

    async def _adecide(self, input: Any, thread: Any) -> Decision:  # noqa: A002
        pending = take_pending(self)
        pinned = self._pinned(thread)
        if pinned is not None:
            drop_decision(self, pending)  # the thread's pin wins over the batch's decision
            return pinned
        return pending or await run_in_executor(None, self.engine.decide_one, self._conversation(input))

    def _plan(
        self, decision: Decision, kwargs: dict[str, Any], view: Any = None
    ) -> tuple[Attempts[_Entry], list[Failure]]:
        """The attempt loop over ``(role, runnable)``, and the failures so far (each
        child run's metadata records them)."""
        failures: list[Failure] = []
        ladder = self.engine.ladder
        attempts = self._attempts(
            decision, lambda k: (ladder.role(k) if ladder is not None else k, self._member(k)),
            timeout=pop_timeout(kwargs), name=lambda entry: model_name(entry[1]), on_failure=failures.append,
            view=view,
        )
        return attempts, failures

    @staticmethod
    def _child_config(
        config: RunnableConfig, run_manager: Any, decision: Decision, entry: _Entry, failures: list[Failure],
    ) -> RunnableConfig:
        role, runnable = entry
        child = patch_config(config, callbacks=run_manager.get_child(f"routellm:{role.value}"))
        record = decision_record(decision, role, model_name(runnable), failures)
        child["metadata"] = {**(child.get("metadata") or {}), DECISION_KEY: record}
        return child

    # Invoke ----------------------------------------------------------------------
    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:  # noqa: A002
        thread = thread_of(config)
        decision = self._decide(input, thread)
        attempts, failures = self._plan(decision, kwargs, output_view)

        def run(value: Any, run_manager: Any, config: RunnableConfig) -> Any:
            outcome = attempts.run(
                lambda e: e[1].invoke(value, self._child_config(config, run_manager, decision, e, failures), **kwargs)
            )
            self._pin(thread, decision, attempts, outcome)
            return _tag(outcome.value, self._record(decision, attempts, outcome))

        return self._call_with_config(run, input, config)

    async def ainvoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:  # noqa: A002
        thread = thread_of(config)
        decision = await self._adecide(input, thread)
        attempts, failures = self._plan(decision, kwargs, output_view)

        async def run(value: Any, run_manager: Any, config: RunnableConfig) -> Any:
            outcome = await attempts.arun(
                lambda e: e[1].ainvoke(value, self._child_config(config, run_manager, decision, e, failures), **kwargs)
            )
            self._pin(thread, decision, attempts, outcome)
            return _tag(outcome.value, self._record(decision, attempts, outcome))

        return await self._acall_with_config(run, input, config)

    # Stream: the chosen runnable's own chunks ------------------------------------
    def stream(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Iterator[Any]:  # noqa: A002
        config = ensure_config(config)
        thread = thread_of(config)
        decision = self._decide(input, thread)
        attempts, failures = self._plan(decision, kwargs, _chunks_view)
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=config.pop("run_id", None)
        )
        final, leaving = None, Leaving()
        try:
            chunks = attempts.stream(
                lambda e: _stream_of(e[1], partial(e[1].stream, input, self._child_config(
                    config, run_manager, decision, e, failures)), kwargs)
            )
            for chunk in chunks:
                if final is None:
                    self._pin(thread, decision, attempts, chunks.outcome)
                    chunk = final = _tag(chunk, self._record(decision, attempts, chunks.outcome))
                    leaving.start(attempts.spend, chunks.outcome, chunks.outcome.model[1], kwargs,
                                  _messages_of(chunks.outcome.model[1], input))
                else:
                    final = _add(final, chunk)
                leaving.add(chunk)
                yield chunk
        except BaseException as exc:
            if isinstance(exc, GeneratorExit):  # the caller left: no ledger sees this answer end
                leaving.left()
            run_manager.on_chain_error(exc)
            raise
        run_manager.on_chain_end(final)

    async def astream(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> AsyncIterator[Any]:  # noqa: A002
        config = ensure_config(config)
        thread = thread_of(config)
        decision = await self._adecide(input, thread)
        attempts, failures = self._plan(decision, kwargs, _chunks_view)
        run_manager = await get_async_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=config.pop("run_id", None)
        )
        final, leaving = None, Leaving()
        try:
            chunks = attempts.astream(
                lambda e: _astream_of(e[1], partial(e[1].astream, input, self._child_config(
                    config, run_manager, decision, e, failures)), kwargs)
            )
            async for chunk in chunks:
                if final is None:
                    self._pin(thread, decision, attempts, chunks.outcome)
                    chunk = final = _tag(chunk, self._record(decision, attempts, chunks.outcome))
                    leaving.start(attempts.spend, chunks.outcome, chunks.outcome.model[1], kwargs,
                                  _messages_of(chunks.outcome.model[1], input))
                else:
                    final = _add(final, chunk)
                leaving.add(chunk)
                yield chunk
        except BaseException as exc:
            if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):  # the caller left
                leaving.left()
            await run_manager.on_chain_error(exc)
            raise
        await run_manager.on_chain_end(final)

    # Batches: one router call ----------------------------------------------------
    def _decide_many(self, inputs: Sequence[Any]) -> list[Optional[Decision]]:
        return decide_each(self.engine, inputs, self._conversation, ConfigError)

    def batch(self, inputs: list[Any], config: Union[RunnableConfig, list[RunnableConfig], None] = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        if not inputs:
            return []
        return run_batch(self, inputs, config, self._decide_many(inputs), self.invoke, return_exceptions, kwargs)

    async def abatch(self, inputs: list[Any], config: Union[RunnableConfig, list[RunnableConfig], None] = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        if not inputs:
            return []
        decisions = await run_in_executor(None, self._decide_many, inputs)
        return await arun_batch(self, inputs, config, decisions, self.ainvoke, return_exceptions, kwargs)


def _chunks_view(chunks: list[Any]) -> AnswerView:
    """A buffered stream's view: its chunks added up (strings, message chunks, dicts)."""
    final = None
    for chunk in chunks:
        final = chunk if final is None else _add(final, chunk)
    return output_view("" if final is None else final)


def _tag(output: Any, record: dict[str, Any]) -> Any:
    if isinstance(output, BaseMessage):
        output.response_metadata = {**output.response_metadata, DECISION_KEY: record}
    return output


def _add(final: Any, chunk: Any) -> Any:
    # Strings by isinstance: StrOutputParser streams a str subclass, and str + it is a plain str.
    if isinstance(final, str) and isinstance(chunk, str):
        return final + chunk
    if isinstance(final, BaseMessageChunk) and type(chunk) is type(final):
        return final + chunk
    if isinstance(final, dict) and isinstance(chunk, dict):
        return {**final, **chunk}
    return chunk


def _streams_chat(runnable: Runnable, kwargs: dict[str, Any], async_api: bool) -> bool:
    """Whether ``runnable`` is a chat model that streams (:func:`~langchain_routellm._routing.can_stream`)."""
    return isinstance(runnable, BaseChatModel) and can_stream(runnable, async_api, kwargs)


def _stream_of(runnable: Runnable, stream: Any, kwargs: dict[str, Any]) -> Iterator[Any]:
    """The chosen runnable's stream; a streaming chat model is asked for its usage
    (:func:`~langchain_routellm._routing.stream_asking_usage`)."""
    if _streams_chat(runnable, kwargs, async_api=False):
        return stream_asking_usage(runnable, stream, kwargs)
    return stream(**kwargs)


def _astream_of(runnable: Runnable, stream: Any, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """:func:`_stream_of` for ``astream``."""
    if _streams_chat(runnable, kwargs, async_api=True):
        return astream_asking_usage(runnable, stream, kwargs)
    return stream(**kwargs)


def _messages_of(runnable: Runnable, value: Any) -> Optional[list[BaseMessage]]:
    """The messages a chat model makes of a stream's input (for the bound of its tokens), or
    ``None`` for another runnable or an input it does not read."""
    if not isinstance(runnable, BaseChatModel):
        return None
    try:
        return runnable._convert_input(value).to_messages()  # noqa: SLF001
    except Exception:  # noqa: BLE001 - its own call raised on it first; no bound then
        return None
