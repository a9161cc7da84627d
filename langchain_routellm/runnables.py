"""``RouteLLMRunnable``: route between two arbitrary runnables with the same routers.

For the general case where the two sides are not chat models: a cheap direct
answer against a full RAG chain, a small chain against an agent. The decision is
made by the same :class:`shared_core.engine.RoutingEngine` as ``RouteLLMChat``,
recorded in the chosen child run's metadata (``metadata["routellm"]``, visible
to callbacks and tracing) and, when the output is a message, in its
``response_metadata["routellm"]``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, Optional, Sequence, Union

from langchain_core.messages import BaseMessage, BaseMessageChunk
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
    arun_batch,
    decide_each,
    model_name,
    run_batch,
    take_pending,
    to_conversation,
)
from shared_core.attempts import Attempts, Failure
from shared_core.engine import decision_record, outcome_record
from shared_core.errors import ConfigError
from shared_core.routers import Decision, Role
from shared_core.settings import RoutedModel, pop_timeout

#: One attempt: the role and the runnable that plays it.
_Entry = tuple[Role, Runnable]


class RouteLLMRunnable(RoutedModel, RunnableSerializable[Any, Any]):
    """Send each input to the ``strong`` or the ``weak`` runnable.

    The text routed on: a string input itself; for messages or a prompt value,
    the last human message (:mod:`shared_core.policy`); for a dict, the value
    under ``input_key`` (or its only string value).

    Key init args: ``strong``, ``weak`` (any runnables), ``input_key``, and the
    routing settings of :class:`shared_core.settings.RoutingSettings`, as for
    :class:`~langchain_routellm.RouteLLMChat`: ``router``, ``threshold``,
    ``strong_fraction``, ``calibration_prompts``, ``on_no_text``, ``fallback``,
    ``fallback_on``, ``timeout`` (also a call argument: ``invoke(x, timeout=5)``).

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

    def __init__(self, *, strong: Runnable, weak: Runnable, **kwargs: Any) -> None:
        for name, runnable in (("strong", strong), ("weak", weak)):
            if not isinstance(runnable, Runnable):
                raise ConfigError(f"{name} must be a LangChain Runnable, got {type(runnable).__name__}: {runnable!r}")
        super().__init__(strong=strong, weak=weak, **kwargs)

    # Routing -------------------------------------------------------------------
    def _conversation(self, value: Any) -> list[tuple[str, Any]]:
        if isinstance(value, str):
            return [("user", value)]
        if isinstance(value, PromptValue):
            return to_conversation(value.to_messages())
        if isinstance(value, BaseMessage):
            return to_conversation([value])
        if isinstance(value, (list, tuple)) and all(isinstance(m, BaseMessage) for m in value):
            return to_conversation(list(value))
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
        """The decision for ``input``, calling neither runnable."""
        return self.engine.decide_one(self._conversation(input))

    async def aroute(self, input: Any) -> Decision:  # noqa: A002
        return await run_in_executor(None, self.route, input)

    def _decide(self, input: Any) -> Decision:  # noqa: A002
        pending = take_pending(self)
        return pending if pending is not None else self.route(input)

    def _plan(self, decision: Decision, kwargs: dict[str, Any]) -> tuple[Attempts[_Entry], list[Failure]]:
        """The attempt loop over ``(role, runnable)``, and the failures so far (each
        child run's metadata records them)."""
        failures: list[Failure] = []
        attempts = self._attempts(
            decision, lambda r: (r, self.strong if r is Role.STRONG else self.weak), timeout=pop_timeout(kwargs),
            name=lambda entry: model_name(entry[1]), on_failure=failures.append,
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
        decision = self._decide(input)
        attempts, failures = self._plan(decision, kwargs)

        def run(value: Any, run_manager: Any, config: RunnableConfig) -> Any:
            outcome = attempts.run(
                lambda e: e[1].invoke(value, self._child_config(config, run_manager, decision, e, failures), **kwargs)
            )
            return _tag(outcome.value, outcome_record(decision, outcome))

        return self._call_with_config(run, input, config)

    async def ainvoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:  # noqa: A002
        decision = take_pending(self) or await self.aroute(input)
        attempts, failures = self._plan(decision, kwargs)

        async def run(value: Any, run_manager: Any, config: RunnableConfig) -> Any:
            outcome = await attempts.arun(
                lambda e: e[1].ainvoke(value, self._child_config(config, run_manager, decision, e, failures), **kwargs)
            )
            return _tag(outcome.value, outcome_record(decision, outcome))

        return await self._acall_with_config(run, input, config)

    # Stream: the chosen runnable's own chunks ------------------------------------
    def stream(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Iterator[Any]:  # noqa: A002
        config = ensure_config(config)
        decision = self._decide(input)
        attempts, failures = self._plan(decision, kwargs)
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=config.pop("run_id", None)
        )
        final = None
        try:
            chunks = attempts.stream(
                lambda e: e[1].stream(input, self._child_config(config, run_manager, decision, e, failures), **kwargs)
            )
            for chunk in chunks:
                if final is None:
                    chunk = final = _tag(chunk, outcome_record(decision, chunks.outcome))
                else:
                    final = _add(final, chunk)
                yield chunk
        except BaseException as exc:
            run_manager.on_chain_error(exc)
            raise
        run_manager.on_chain_end(final)

    async def astream(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> AsyncIterator[Any]:  # noqa: A002
        config = ensure_config(config)
        decision = take_pending(self) or await self.aroute(input)
        attempts, failures = self._plan(decision, kwargs)
        run_manager = await get_async_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=config.pop("run_id", None)
        )
        final = None
        try:
            chunks = attempts.astream(
                lambda e: e[1].astream(input, self._child_config(config, run_manager, decision, e, failures), **kwargs)
            )
            async for chunk in chunks:
                if final is None:
                    chunk = final = _tag(chunk, outcome_record(decision, chunks.outcome))
                else:
                    final = _add(final, chunk)
                yield chunk
        except BaseException as exc:
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


def _tag(output: Any, record: dict[str, Any]) -> Any:
    if isinstance(output, BaseMessage):
        output.response_metadata = {**output.response_metadata, DECISION_KEY: record}
    return output


def _add(final: Any, chunk: Any) -> Any:
    if isinstance(final, (str, BaseMessageChunk)) and type(chunk) is type(final):
        return final + chunk
    if isinstance(final, dict) and isinstance(chunk, dict):
        return {**final, **chunk}
    return chunk
