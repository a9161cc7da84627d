"""``RouteLLMChat``: a LangChain chat model that sends each call to a strong or a weak model."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from functools import partial
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Sequence, Union

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput, ModelProfile
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import ensure_config, run_in_executor
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from langchain_routellm._routing import (
    DECISION_KEY,
    THREAD_KWARG,
    Leaving,
    arun_batch,
    astream_asking_usage,
    can_stream,
    decide_each,
    drop_decision,
    message_view,
    model_name,
    run_batch,
    stream_asking_usage,
    take_pending,
    thread_of,
    to_conversation,
)
from shared_core.attempts import Attempts, Escalation, Outcome, rejected_answers
from shared_core.errors import ConfigError
from shared_core.escalation import AnswerView, CallContext
from shared_core.routers import Decision, Role
from shared_core.settings import RoutedModel, ladder_ends, pop_timeout

#: ``bind_tools`` stores each model's own tool keyword arguments under this call keyword.
PER_MODEL_KWARGS = "routellm_per_model"
#: ``stream()`` hands ``_stream`` a sink for the answers a check rejected under this call keyword.
REJECTED_KWARG = "routellm_rejected"
#: ``stream()`` hands ``_stream`` the state it charges a budget by if the caller leaves (:class:`Leaving`).
LEAVING_KWARG = "routellm_leaving"
#: ``bind_tools`` stores the tools' parameter schemas (for the ``tool_calls`` check) under this call keyword.
TOOLS_KWARG = "routellm_tools"
_REQUIRED_CHOICES = ("any", "required")
_PROFILE_MIN = ("max_input_tokens", "max_output_tokens")


class RouteLLMChat(RoutedModel, BaseChatModel):
    """A chat model that routes every call to a strong or a weak chat model.

    The router scores the last human message (an agent's tool loop keeps it, so
    every step of one loop goes to the same model) and the call goes to
    ``strong`` when the score is at least the threshold, else to ``weak``
    (RouteLLM semantics). The policy lives in :mod:`shared_core.policy`; this
    class converts messages, delegates to the chosen model's ``_generate`` /
    ``_stream`` under its own run (one chat-model run per call, usage counted
    once) and records the decision in ``response_metadata["routellm"]``.

    Setup:
        ``pip install "routellm-integrations[langchain]"``

    Key init args:
        strong: BaseChatModel
            Chat model for the calls the router judges hard.
        weak: BaseChatModel
            Chat model for the others.
        router: str | Path | Router | None
            ``None`` (the package's shipped default router), a registry name
            (``"random"``, ``"mf"``, ...), a RouteLLM model string
            (``"router-mf-0.11593"``, which carries the threshold), a directory
            saved with ``Router.save``, or a ``Router`` object.
        threshold: float | None
            Send a call to ``strong`` when its score is >= this value, in [0, 1].
        strong_fraction: float | None
            Instead of a threshold: the share of calls for ``strong``, turned into
            a threshold on ``calibration_prompts`` or the router's reference
            quantiles. Neither given means ``strong_fraction=0.5``.
        calibration_prompts: list[str] | None
            Prompts on which ``strong_fraction`` is calibrated.
        on_no_text: "strong" | "weak"
            Where a call with nothing to score goes (no human message, or one with
            only images).
        fallback: bool
            If the chosen model fails with a ``fallback_on`` error, call the
            other one and record it (``response_metadata["routellm"]["fallback"]``
            and ``["failures"]``). Off by default. A stream falls back only if
            the error comes before its first chunk. If both fail, one
            ``AllModelsFailedError`` carries both errors.
        fallback_on: exception types | predicate | None
            The errors that fall back. ``None`` (default): what providers raise
            when down or overloaded (connection errors, timeouts, HTTP 429 and
            5xx), never a ``TypeError`` or ``ValueError``.
        timeout: float | None
            Seconds each model may take (streaming: for each chunk); running out
            raises ``ModelTimeoutError`` (and falls back with ``fallback``).
            Also a call argument: ``llm.invoke(..., timeout=5)``.
        temperature, max_tokens, stop: optional
            When set, passed to whichever model is chosen, as call arguments.
        escalate_on: None | "all" | list of check names, checks, predicates
            Checks on the weak model's answer (``"empty"``, ``"refusal"``,
            ``"length"``, ``"tool_calls"``, ``"structured"``, or ``view -> bool``)
            that send the same call to the strong model; recorded in
            ``["routellm"]["escalations"]``, the rejected answer's usage
            reported as its own chat-model run. Streams of the weak model are
            buffered while checked (see ``docs/escalation.md``).
        route_on: "last_user" | "last_turn"
            Score the last human message, or the previous turn with it.
        pin_threads: int
            Pin each conversation (``config={"configurable": {"thread_id": ...}}``)
            to the model its first call went to, unless an answer escalates;
            this many threads are remembered. 0 (default): off.
        ladder: list of (model, name, threshold)
            Instead of ``strong``/``weak``: chat models cheapest first, each
            with its name in a multi-model router's table (``irt``) and the
            predicted quality it needs (:mod:`shared_core.ladder`).

    Instantiate:
        .. code-block:: python

            >>> from langchain_routellm import RouteLLMChat
            >>> from langchain_routellm.testing import FakeToolChatModel
            >>> llm = RouteLLMChat(
            ...     strong=FakeToolChatModel(model_name="big"),
            ...     weak=FakeToolChatModel(model_name="small"),
            ...     router="random",
            ...     threshold=0.5,
            ... )

    Route without calling a model:
        .. code-block:: python

            >>> llm.route("Prove that there are infinitely many primes.").role.value
            'weak'

    Invoke:
        .. code-block:: python

            >>> message = llm.invoke("Prove that there are infinitely many primes.")
            >>> message.content
            '[small] Prove that there are infinitely many primes.'
            >>> message.response_metadata["routellm"]["model"]
            'small'

    Stream:
        .. code-block:: python

            >>> "".join(chunk.text for chunk in llm.stream("What is 2 + 2?"))
            '[big] What is 2 + 2?'

    Async:
        .. code-block:: python

            >>> import asyncio
            >>> asyncio.run(llm.ainvoke("What is 2 + 2?")).response_metadata["routellm"]["role"]
            'strong'

    Change a setting (the routing follows; a bad value raises and changes nothing):
        .. code-block:: python

            >>> llm.threshold = 0.1
            >>> llm.route("Prove that there are infinitely many primes.").role.value
            'strong'
            >>> llm.model_copy(update={"threshold": 0.9}).route("What is 2 + 2?").role.value
            'weak'

    Escalate when the weak answer fails a check (the same call goes to ``strong``):
        .. code-block:: python

            >>> picky = llm.model_copy(update={
            ...     "threshold": 0.9, "escalate_on": ["empty", lambda view: view.text.startswith("[small]")]})
            >>> record = picky.invoke("What is 2 + 2?").response_metadata["routellm"]
            >>> record["model"], record["escalated"]["from"], record["escalated"]["reason"]
            ('big', 'weak', '<lambda>: the predicate rejected the answer')

    Tool calling and structured output bind on both models, so whichever is
    chosen can answer: ``llm.bind_tools([...])``, ``llm.with_structured_output(Schema)``.
    Structured output binds the schema as a tool (as ``BaseChatModel`` does; a
    ``method`` argument is ignored), so both models need tool calling.

    Accounting: the chosen model's ``_generate``/``_stream`` runs inside this
    model's run, so callbacks and tracing see one chat-model run per call and
    token usage is counted once. The chosen model's own ``callbacks`` and
    ``cache`` are not consulted (this model's are); its rate limiter is.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    strong: BaseChatModel = Field(description="Chat model for the calls the router judges hard.")
    weak: BaseChatModel = Field(description="Chat model for the calls the router judges easy.")
    streaming: bool = Field(default=False, description="Make invoke stream from the chosen model.")
    temperature: Optional[float] = Field(default=None, description="Passed to the chosen model when set.")
    max_tokens: Optional[int] = Field(default=None, description="Passed to the chosen model when set.")
    stop: Optional[list[str]] = Field(default=None, description="Stop sequences for calls that give none.")

    def __init__(self, *, strong: Optional[BaseChatModel] = None, weak: Optional[BaseChatModel] = None,
                 **kwargs: Any) -> None:
        """``strong``, ``weak`` (or a ``ladder``) and the settings above; the
        routing fields are :class:`shared_core.settings.RoutingSettings`'."""

        def check(name: str, model: Any) -> None:
            if not isinstance(model, BaseChatModel):
                hint = (" (a bound model: pass the model itself and use RouteLLMChat.bind_tools / bind)"
                        if isinstance(model, RunnableBinding) else "")
                raise ConfigError(
                    f"{name} must be a LangChain BaseChatModel, got {type(model).__name__}: {model!r}{hint}"
                )

        strong, weak = ladder_ends(strong, weak, kwargs, check)
        super().__init__(strong=strong, weak=weak, **kwargs)

    # Description ---------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "routellm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "strong": model_name(self.strong),
            "weak": model_name(self.weak),
            **self.engine.describe(),
            "fallback": self.fallback,
            # in the cache key, as a provider's own model has them: a cached answer is reused only for the same ones
            **self._defaults(),
            **({"ladder_models": [model_name(m) for _, m in self._members()]} if self.ladder is not None else {}),
        }

    def _get_llm_string(self, stop: Optional[list[str]] = None, **kwargs: Any) -> str:
        """The cache key of a call: our settings, then each model's own key as LangChain's
        cache keys it alone (its parameters, such as its temperature, not only its name)."""
        own = super()._get_llm_string(stop=stop, **kwargs)
        return own + "---" + str([model._get_llm_string() for _, model in self._members()])  # noqa: SLF001

    def _get_ls_params(self, stop: Optional[list[str]] = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="routellm",
            ls_model_name=kwargs.get("model") or f"routellm({model_name(self.strong)}|{model_name(self.weak)})",
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        stops = self._stop(stop)
        if stops:
            params["ls_stop"] = stops
        return params

    def _resolve_model_profile(self) -> Optional[ModelProfile]:
        """What holds for every model (both, or each rung): capabilities all have, the smallest limits."""
        profiles = [m.profile for _, m in self._members()]
        if not all(isinstance(p, dict) for p in profiles):
            return None
        merged: dict[str, Any] = {}
        for key in set.intersection(*(set(p) for p in profiles)):
            values = [p[key] for p in profiles]
            if all(isinstance(v, bool) for v in values):
                merged[key] = all(values)
            elif key in _PROFILE_MIN and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                merged[key] = min(values)
        return ModelProfile(**merged)

    # Routing -------------------------------------------------------------------
    def route(self, input: LanguageModelInput) -> Decision:  # noqa: A002
        """The decision for ``input`` (a string, messages or a prompt value), calling no model
        (a controller previews it: nothing is counted or reserved for it)."""
        return self.engine.decide_one(_conversation(self._convert_input(input).to_messages()), observe=False)

    async def aroute(self, input: LanguageModelInput) -> Decision:  # noqa: A002
        """Async :meth:`route`; the router runs in an executor thread."""
        return await run_in_executor(None, self.route, input)

    def _decide_many(self, inputs: Sequence[LanguageModelInput]) -> list[Optional[Decision]]:
        return decide_each(
            self.engine, inputs, lambda item: _conversation(self._convert_input(item).to_messages()),
            (ValueError, TypeError),
        )

    def _decide(self, messages: list[BaseMessage], thread: Any = None) -> Decision:
        pending = take_pending(self)
        conversation = _conversation(messages)
        pinned = self._pinned(thread)
        if pinned is not None:
            drop_decision(self, pending)  # the thread's pin wins over the batch's decision
            return pinned
        return pending if pending is not None else self.engine.decide_one(conversation)

    async def _adecide(self, messages: list[BaseMessage], thread: Any) -> Decision:
        pending = take_pending(self)
        conversation = _conversation(messages)
        pinned = self._pinned(thread)
        if pinned is not None:
            drop_decision(self, pending)  # the thread's pin wins over the batch's decision
            return pinned
        return pending or await run_in_executor(None, self.engine.decide_one, conversation)

    def _plan(
        self, decision: Decision, kwargs: dict[str, Any], view: Optional[Callable[[Any], AnswerView]] = None,
    ) -> Attempts[tuple[BaseChatModel, dict[str, Any]]]:
        """The attempt loop: each model to try with its call keyword arguments."""
        timeout = pop_timeout(kwargs)
        per_model = kwargs.pop(PER_MODEL_KWARGS, None) or {}
        tools = kwargs.pop(TOOLS_KWARG, None) or {}
        defaults = self._defaults()
        schemas = tools.get("schemas") or {}
        required = _tool_required(kwargs["tool_choice"], schemas) if "tool_choice" in kwargs else tools.get("required")
        context = CallContext(tools=schemas, tool_required=bool(required),
                              structured_as_tool=bool(tools.get("structured")))
        return self._attempts(
            decision,
            # A call's own arguments win over those bind_tools bound, as with any RunnableBinding.
            lambda k: (self._model(k), {**defaults, **per_model.get(self._key_label(k), {}), **kwargs}),
            timeout=timeout, name=lambda entry: model_name(entry[0]), view=view, context=context,
        )

    def _model(self, key: Any) -> BaseChatModel:
        return self._member(key)

    def _defaults(self) -> dict[str, Any]:
        """The call arguments set on this model (``temperature``, ``max_tokens``), for whichever model answers."""
        return {k: v for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens)) if v is not None}

    def _stop(self, stop: Optional[list[str]]) -> Optional[list[str]]:
        """The call's stop sequences, or the field's when the call gives none (``stop=[]``: none at all)."""
        return self.stop if stop is None else stop

    # Generation: every path decides the same way, then hands the chosen model our run
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        thread = kwargs.pop(THREAD_KWARG, None)
        kwargs.pop(REJECTED_KWARG, None)  # this run manager reports them
        kwargs.pop(LEAVING_KWARG, None)  # stream() with streaming disabled: an answer that came whole
        decision = self._decide(messages, thread)

        def call(entry: tuple[BaseChatModel, dict[str, Any]]) -> ChatResult:
            model, call_kwargs = entry
            _acquire(model)
            return model._generate(messages, stop=self._stop(stop), run_manager=run_manager, **call_kwargs)  # noqa: SLF001

        attempts = self._plan(decision, kwargs, _result_view)
        try:
            outcome = attempts.run(call)
        except BaseException as exc:  # answers rejected before it were paid for: report them
            _report_rejected(run_manager, messages, rejected_answers(exc), unanswered=True)
            raise
        _report_rejected(run_manager, messages, outcome.escalations)
        self._pin(thread, decision, attempts, outcome)
        return _tag_result(outcome.value, self._record(decision, attempts, outcome, _usage))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        thread = kwargs.pop(THREAD_KWARG, None)
        kwargs.pop(REJECTED_KWARG, None)  # this run manager reports them
        kwargs.pop(LEAVING_KWARG, None)  # stream() with streaming disabled: an answer that came whole
        decision = await self._adecide(messages, thread)

        async def call(entry: tuple[BaseChatModel, dict[str, Any]]) -> ChatResult:
            model, call_kwargs = entry
            await _aacquire(model)
            return await model._agenerate(messages, stop=self._stop(stop), run_manager=run_manager, **call_kwargs)  # noqa: SLF001

        attempts = self._plan(decision, kwargs, _result_view)
        try:
            outcome = await attempts.arun(call)
        except BaseException as exc:
            await _areport_rejected(run_manager, messages, rejected_answers(exc), unanswered=True)
            raise
        await _areport_rejected(run_manager, messages, outcome.escalations)
        self._pin(thread, decision, attempts, outcome)
        return _tag_result(outcome.value, self._record(decision, attempts, outcome, _usage))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        thread, sink = kwargs.pop(THREAD_KWARG, None), kwargs.pop(REJECTED_KWARG, None)
        leaving = kwargs.pop(LEAVING_KWARG, None) or Leaving()
        decision = self._decide(messages, thread)
        attempts = self._plan(decision, kwargs, _chunks_view)
        # A checked (buffered) answer streams no tokens of its own: they are released once it passes.
        quiet = _checked(attempts)
        chunks = attempts.stream(
            lambda entry: _inner_stream(entry[0], messages, self._stop(stop),
                                        None if id(entry) in quiet else run_manager, entry[1])
        )
        try:
            for i, chunk in enumerate(chunks):
                if i == 0:
                    if sink is not None:  # stream() / invoke(streaming) give no run manager: they report them
                        sink.outcome = chunks.outcome
                    else:
                        _report_rejected(run_manager, messages, chunks.outcome.escalations)
                    self._pin(thread, decision, attempts, chunks.outcome)
                    chunk = _tag_chunk(chunk, self._record(decision, attempts, chunks.outcome, _usage))
                    leaving.start(attempts.spend, chunks.outcome, *chunks.outcome.model, messages)
                leaving.add(chunk)
                yield chunk
        except GeneratorExit:  # the caller left: no ledger will see this answer end
            leaving.left()
            raise
        except BaseException as exc:  # the escalation failed: its rejected answers were paid for
            if sink is not None:
                sink.lost = rejected_answers(exc)
            else:
                _report_rejected(run_manager, messages, rejected_answers(exc), unanswered=True)
            raise

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        thread, sink = kwargs.pop(THREAD_KWARG, None), kwargs.pop(REJECTED_KWARG, None)
        leaving = kwargs.pop(LEAVING_KWARG, None) or Leaving()
        decision = await self._adecide(messages, thread)
        attempts = self._plan(decision, kwargs, _chunks_view)
        quiet = _checked(attempts)
        chunks = attempts.astream(
            lambda entry: _inner_astream(entry[0], messages, self._stop(stop),
                                         None if id(entry) in quiet else run_manager, entry[1])
        )
        first = True
        try:
            async for chunk in chunks:
                if first:
                    if sink is not None:
                        sink.outcome = chunks.outcome
                    else:
                        await _areport_rejected(run_manager, messages, chunks.outcome.escalations)
                    self._pin(thread, decision, attempts, chunks.outcome)
                    chunk = _tag_chunk(chunk, self._record(decision, attempts, chunks.outcome, _usage))
                    leaving.start(attempts.spend, chunks.outcome, *chunks.outcome.model, messages)
                    first = False
                leaving.add(chunk)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):  # the caller left (closed, or cancelled it)
            leaving.left()
            raise
        except BaseException as exc:
            if sink is not None:
                sink.lost = rejected_answers(exc)
            else:
                await _areport_rejected(run_manager, messages, rejected_answers(exc), unanswered=True)
            raise

    # Call keywords for our own _generate / _stream: the thread id from the config,
    # and (escalation on) a sink for the rejected answers a _stream without a run
    # manager cannot report (BaseChatModel gives _stream none): reported here after it.
    def _own_kwargs(self, config: Optional[RunnableConfig], kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        thread, sink = thread_of(config), None
        own = {**kwargs, THREAD_KWARG: thread} if thread is not None and self.pin_threads else dict(kwargs)
        if self.escalate_on is not None:
            sink = own[REJECTED_KWARG] = _Rejected()
        return own, sink

    def invoke(self, input: LanguageModelInput, config: Optional[RunnableConfig] = None, *,  # noqa: A002
               stop: Optional[list[str]] = None, **kwargs: Any) -> AIMessage:
        own, sink = self._own_kwargs(config, kwargs)
        try:
            return super().invoke(input, config, stop=stop, **own)
        finally:  # answered or failed after a rejection: the rejected answers are reported
            if sink is not None:
                sink.report(self, config, input)

    async def ainvoke(self, input: LanguageModelInput, config: Optional[RunnableConfig] = None, *,  # noqa: A002
                      stop: Optional[list[str]] = None, **kwargs: Any) -> AIMessage:
        own, sink = self._own_kwargs(config, kwargs)
        try:
            return await super().ainvoke(input, config, stop=stop, **own)
        finally:
            if sink is not None:
                await sink.areport(self, config, input)

    def stream(self, input: LanguageModelInput, config: Optional[RunnableConfig] = None, *,  # noqa: A002
               stop: Optional[list[str]] = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        own, sink = self._own_kwargs(config, kwargs)
        leaving = own[LEAVING_KWARG] = Leaving()
        try:
            yield from super().stream(input, config, stop=stop, **own)
        except GeneratorExit:  # the caller left (BaseChatModel.stream has ended the run): charge the budget
            leaving.left()
            raise
        finally:
            if sink is not None:
                sink.report(self, config, input)

    async def astream(self, input: LanguageModelInput, config: Optional[RunnableConfig] = None, *,  # noqa: A002
                      stop: Optional[list[str]] = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        own, sink = self._own_kwargs(config, kwargs)
        leaving = own[LEAVING_KWARG] = Leaving()
        try:
            # aclosing: a caller that leaves ends the run now (on_llm_error), not when it is garbage-collected
            async with aclosing(super().astream(input, config, stop=stop, **own)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except (GeneratorExit, asyncio.CancelledError):  # the caller left: charge the budget
            leaving.left()
            raise
        finally:
            if sink is not None:
                await sink.areport(self, config, input)

    # Batches: one router call for all inputs ------------------------------------
    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: Union[RunnableConfig, list[RunnableConfig], None] = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        return run_batch(self, inputs, config, self._decide_many(inputs), self.invoke, return_exceptions, kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: Union[RunnableConfig, list[RunnableConfig], None] = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        decisions = await run_in_executor(None, self._decide_many, inputs)
        return await arun_batch(self, inputs, config, decisions, self.ainvoke, return_exceptions, kwargs)

    # Tools and structured output -------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[Union[dict[str, Any], type, Callable, Any]],
        *,
        tool_choice: Optional[Union[str, dict, bool]] = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on both models, each in its own provider format.

        Each model's ``bind_tools`` runs now, so a model that cannot take the
        tools (or the ``tool_choice``) fails here, not at the first call. The
        result routes per call like this model and passes the chosen model its
        own tool arguments.
        """
        tracing = {k: kwargs.pop(k) for k in ("ls_structured_output_format",) if k in kwargs}
        per_model: dict[str, dict[str, Any]] = {}
        for role, model in self._members():
            extra = {"tool_choice": tool_choice} if tool_choice is not None else {}
            try:
                bound = model.bind_tools(tools, **extra, **kwargs)
            except NotImplementedError:
                raise ConfigError(
                    f"the {role} model {type(model).__name__} does not support tool calling; "
                    "bind_tools needs both models to"
                ) from None
            if not isinstance(bound, RunnableBinding) or bound.bound is not model:
                raise ConfigError(
                    f"the {role} model's bind_tools returned {type(bound).__name__}, not keyword arguments "
                    "bound to the model itself; RouteLLMChat cannot route it"
                )
            per_model[role] = dict(bound.kwargs)
        schemas = {}
        for tool in tools:
            function = convert_to_openai_tool(tool).get("function") or {}
            if function.get("name"):
                schemas[function["name"]] = function.get("parameters") or {"type": "object"}
        tools_info = {"schemas": schemas, "required": _tool_required(tool_choice, schemas), "structured": bool(tracing)}
        return self.bind(**{PER_MODEL_KWARGS: per_model, TOOLS_KWARG: tools_info}, **tracing)

    # Token counting: as the model that would answer counts ------------------------
    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text`` as counted by the model it would be routed to."""
        decision = self.engine.decide_one([("user", text)], observe=False)
        return self._model(self._decision_key(decision)).get_num_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Optional[Sequence[Any]] = None
    ) -> int:
        """Tokens of ``messages`` as counted by the model they would be routed to."""
        model = self._model(self._decision_key(self.engine.decide_one(to_conversation(messages), observe=False)))
        if tools is None:
            return model.get_num_tokens_from_messages(messages)
        return model.get_num_tokens_from_messages(messages, tools=tools)


# Escalation: views of an answer, rejected answers' usage ---------------------------
def _result_view(result: ChatResult) -> AnswerView:
    generation = result.generations[0]
    return message_view(generation.message, generation.generation_info)


def _merged(chunks: Sequence[ChatGenerationChunk]) -> ChatGeneration:
    if not chunks:
        return ChatGeneration(message=AIMessage(content=""))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged


def _chunks_view(chunks: Sequence[ChatGenerationChunk]) -> AnswerView:
    generation = _merged(chunks)
    return message_view(generation.message, generation.generation_info)


def _generation(value: Any) -> ChatGeneration:
    return value.generations[0] if isinstance(value, ChatResult) else _merged(value)


def _usage(value: Any) -> Any:
    """A rejected answer's token usage, for its escalation record."""
    return getattr(_generation(value).message, "usage_metadata", None)


def _checked(attempts: Attempts[Any]) -> set[int]:
    """Ids of the plan entries whose answers may be checked (buffered while streaming): the weak ones."""
    if not attempts.checks:
        return set()
    return {id(entry) for role, entry in (*attempts.plan, *attempts.escalate_to) if role is Role.WEAK}


def _as_reported(value: Any) -> ChatGeneration:
    """A rejected answer's generation as ``BaseChatModel`` reports an answer's: the result's
    ``llm_output`` and the generation's ``generation_info`` merged into the message's
    ``response_metadata`` (where usage callbacks read the model name; ChatOpenAI puts it
    in ``llm_output``). The answer itself is left unchanged."""
    generation = _generation(value)
    llm_output = value.llm_output if isinstance(value, ChatResult) else None
    metadata = {**(llm_output or {}), **(generation.generation_info or {}), **generation.message.response_metadata}
    if metadata == generation.message.response_metadata:
        return generation
    message = generation.message.model_copy(update={"response_metadata": metadata})
    return ChatGeneration(message=message, generation_info=generation.generation_info)


def _rejected_runs(escalations: Sequence[Escalation], unanswered: bool = False
                   ) -> list[tuple[str, LLMResult, dict[str, Any]]]:
    """A run for each rejected answer: its model's name, its result, and the run metadata
    ``routellm`` (``rejected``, ``role``, ``reason``; ``unanswered`` when the call then
    failed, so that a ledger prices it on its own: no answer's record carries it)."""
    return [(e.model, LLMResult(generations=[[_as_reported(e.value)]]),
             {"routellm": {"rejected": True, "role": e.role.value, "model": e.model, "reason": e.reason,
                           **({"unanswered": True} if unanswered else {})}})
            for e in escalations]


class _Rejected:
    """Where ``_stream`` leaves its outcome (or, if the call failed after a rejection,
    the rejected answers: ``lost``) for ``stream()`` to report the rejected answers."""

    outcome: Optional[Outcome[Any]] = None
    lost: tuple[Escalation, ...] = ()

    def __repr__(self) -> str:  # shown in invocation params
        return "<routellm rejected-answers sink>"

    def _all(self) -> list[tuple[str, LLMResult, dict[str, Any]]]:
        answered = _rejected_runs(self.outcome.escalations) if self.outcome is not None else []
        return answered + _rejected_runs(self.lost, unanswered=True)

    def _runs(self, owner: "RouteLLMChat", config: Optional[RunnableConfig], input: Any, cls: type) -> Any:  # noqa: A002
        config = ensure_config(config)
        manager = cls.configure(config.get("callbacks"), owner.callbacks, owner.verbose,
                                [*(config.get("tags") or []), "routellm:rejected"], owner.tags,
                                config.get("metadata"), owner.metadata)
        return manager, owner._convert_input(input).to_messages()  # noqa: SLF001

    def report(self, owner: "RouteLLMChat", config: Optional[RunnableConfig], input: Any) -> None:  # noqa: A002
        runs = self._all()
        if runs:
            manager, messages = self._runs(owner, config, input, CallbackManager)
            for name, result, metadata in runs:
                manager.add_metadata(metadata)
                for run in manager.on_chat_model_start({"name": name}, [messages], name=name):
                    run.on_llm_end(result)

    async def areport(self, owner: "RouteLLMChat", config: Optional[RunnableConfig], input: Any) -> None:  # noqa: A002
        runs = self._all()
        if runs:
            manager, messages = self._runs(owner, config, input, AsyncCallbackManager)
            for name, result, metadata in runs:
                manager.add_metadata(metadata)
                for run in await manager.on_chat_model_start({"name": name}, [messages], name=name):
                    await run.on_llm_end(result)


def _sibling(run_manager: Any, manager_cls: type, metadata: dict[str, Any]) -> Any:
    """A callback manager for a run beside ``run_manager``'s (same handlers, tags, parent)."""
    manager = manager_cls(handlers=list(run_manager.handlers), inheritable_handlers=list(run_manager.inheritable_handlers),
                          parent_run_id=run_manager.parent_run_id)
    manager.add_tags([*run_manager.inheritable_tags, "routellm:rejected"])
    manager.add_metadata({**run_manager.inheritable_metadata, **metadata})
    return manager


def _report_rejected(run_manager: Optional[CallbackManagerForLLMRun], messages: list[BaseMessage],
                     escalations: Sequence[Escalation], unanswered: bool = False) -> None:
    """Report each rejected answer as a chat-model run of its own, beside this call's
    (same parent, tag ``routellm:rejected``), so that callbacks (usage, cost) count
    the rejected model's tokens once, and the answer's tokens once in this run
    (``unanswered``: the call failed after the rejection, and these are all it cost)."""
    if run_manager is None:
        return
    for name, result, metadata in _rejected_runs(escalations, unanswered):
        for run in _sibling(run_manager, CallbackManager, metadata).on_chat_model_start(
                {"name": name}, [messages], name=name):
            run.on_llm_end(result)


async def _areport_rejected(run_manager: Optional[AsyncCallbackManagerForLLMRun], messages: list[BaseMessage],
                            escalations: Sequence[Escalation], unanswered: bool = False) -> None:
    if run_manager is None:
        return
    for name, result, metadata in _rejected_runs(escalations, unanswered):
        for run in await _sibling(run_manager, AsyncCallbackManager, metadata).on_chat_model_start(
                {"name": name}, [messages], name=name):
            await run.on_llm_end(result)


# Helpers -------------------------------------------------------------------------
def _conversation(messages: Sequence[BaseMessage]) -> list[tuple[str, Any]]:
    """A call's messages as the routing policy reads them; a chat model call needs at least one."""
    if not messages:
        raise ConfigError("RouteLLMChat got an empty list of messages; a call needs at least one message")
    return to_conversation(messages)


def _tool_required(tool_choice: Any, schemas: dict[str, Any]) -> bool:
    """Whether ``tool_choice`` obliges the model to call a tool (for the ``tool_calls`` check)."""
    return tool_choice is True or tool_choice in _REQUIRED_CHOICES or isinstance(tool_choice, dict) or (
        isinstance(tool_choice, str) and tool_choice in schemas)


def _acquire(model: BaseChatModel) -> None:
    # The inner model's public methods would apply its rate limiter; we call its
    # _generate/_stream, so apply it here.
    if model.rate_limiter is not None:
        model.rate_limiter.acquire(blocking=True)


async def _aacquire(model: BaseChatModel) -> None:
    if model.rate_limiter is not None:
        await model.rate_limiter.aacquire(blocking=True)


def _inner_stream(model, messages, stop, run_manager, kwargs) -> Iterator[ChatGenerationChunk]:
    _acquire(model)
    if can_stream(model, False, kwargs):
        yield from stream_asking_usage(
            model, partial(model._stream, messages, stop=stop, run_manager=run_manager), kwargs)  # noqa: SLF001
    else:
        yield from _result_chunks(model._generate(messages, stop=stop, run_manager=run_manager, **kwargs))  # noqa: SLF001


async def _inner_astream(model, messages, stop, run_manager, kwargs) -> AsyncIterator[ChatGenerationChunk]:
    await _aacquire(model)
    if can_stream(model, True, kwargs):
        async for chunk in astream_asking_usage(
                model, partial(model._astream, messages, stop=stop, run_manager=run_manager), kwargs):  # noqa: SLF001
            yield chunk
    else:
        result = await model._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)  # noqa: SLF001
        for chunk in _result_chunks(result):
            yield chunk


def _result_chunks(result: ChatResult) -> Iterator[ChatGenerationChunk]:
    """A non-streaming model's answer as one final chunk."""
    message = result.generations[0].message
    tool_calls = message.tool_calls if isinstance(message, AIMessage) else []
    chunk = AIMessageChunk(
        content=message.content,
        additional_kwargs=dict(message.additional_kwargs),
        response_metadata=dict(message.response_metadata),
        usage_metadata=getattr(message, "usage_metadata", None),
        id=message.id,
        name=message.name,
        tool_call_chunks=[
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c.get("id"), "index": i,
             "type": "tool_call_chunk"}
            for i, c in enumerate(tool_calls)
        ],
        chunk_position="last",
    )
    if isinstance(message, AIMessage) and message.invalid_tool_calls:
        # Not as tool call chunks: their lenient parser would make '{bad json' a valid call with args {}.
        chunk.invalid_tool_calls = [*chunk.invalid_tool_calls, *message.invalid_tool_calls]
    yield ChatGenerationChunk(message=chunk, generation_info=result.generations[0].generation_info)


def _tag_result(result: ChatResult, record: dict[str, Any]) -> ChatResult:
    for generation in result.generations:
        generation.message.response_metadata = {**generation.message.response_metadata, DECISION_KEY: record}
    return result


def _tag_chunk(chunk: ChatGenerationChunk, record: dict[str, Any]) -> ChatGenerationChunk:
    # Only the first chunk carries the record: merging chunks would concatenate
    # the strings of a record repeated on every chunk.
    chunk.message.response_metadata = {**chunk.message.response_metadata, DECISION_KEY: record}
    return chunk
