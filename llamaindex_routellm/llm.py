"""``RouteLLM``: a LlamaIndex LLM that sends each call to a strong or a weak LLM.

All routing logic (router, threshold or strong fraction, which text is scored)
lives in :class:`shared_core.engine.RoutingEngine`; this class converts
LlamaIndex messages to ``(role, content)`` pairs and delegates every call to the
chosen model. It emits no instrumentation events of its own: the chosen model
emits them, once, exactly as if it had been called directly.
"""

from __future__ import annotations

import asyncio
from collections import ChainMap
from contextvars import ContextVar
from pathlib import Path
from typing import (
    TYPE_CHECKING, Any, AsyncGenerator, Awaitable, Callable, Dict, Generator, Iterator, List, Optional,
    Sequence, Tuple, Union,
)
from uuid import uuid4

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.prompts import BasePromptTemplate

from shared_core.attempts import Failure
from shared_core.engine import RoutingEngine, attempt_order, decision_record
from shared_core.errors import ConfigError
from shared_core.routers import Decision, Role, Router

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

#: Key under which every response's ``additional_kwargs`` records the decision.
DECISION_KEY = "routellm"

#: The last decision of each RouteLLM (by instance key) in the current context.
#: Module level and copied on write, so instances stay deep-copyable and picklable.
_LAST_DECISIONS: ContextVar[Optional[Dict[str, Decision]]] = ContextVar("routellm_last_decisions", default=None)

#: LlamaIndex role values to the roles of :mod:`shared_core.policy`.
_ROLES = {
    "user": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


def to_conversation(messages: Sequence[ChatMessage]) -> List[Tuple[str, Any]]:
    """LlamaIndex messages as the ``(role, content)`` pairs :mod:`shared_core.policy` reads.

    Content is the message's blocks; text blocks count, images and tool calls do not.
    """
    pairs: List[Tuple[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise ConfigError(
                f"messages[{i}] must be a llama_index ChatMessage, got {type(message).__name__}"
            )
        role = MessageRole(message.role).value
        pairs.append((_ROLES.get(role, role), message.blocks))
    return pairs


def _tools_conversation(
    user_msg: Optional[Union[str, ChatMessage]], chat_history: Optional[Sequence[ChatMessage]]
) -> List[Tuple[str, Any]]:
    """The conversation a ``chat_with_tools`` call sends: the history, then the user message."""
    messages = list(chat_history or [])
    if isinstance(user_msg, str):
        messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
    elif user_msg is not None:
        messages.append(user_msg)
    return to_conversation(messages)


class RouteLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that routes every call to a strong or a weak LLM.

    The router scores the last user message (in a RAG query engine: the user's
    question, ``query_str``, not the prompt stuffed with retrieved text) and the
    call goes to ``strong`` when the score is at least the threshold, else to
    ``weak`` (RouteLLM semantics). Routing settings are those of the LangChain
    wrapper, and both share :class:`shared_core.engine.RoutingEngine`, so they make
    the same decision for the same question and configuration.

    Setup:
        ``pip install "routellm-integrations[llamaindex]"``

    Key init args:
        strong: LlamaIndex LLM for the calls the router judges hard.
        weak: LlamaIndex LLM for the others.
        router: ``None``/``"default"`` (the shipped router), a registry name
            (``"random"``, ``"mf"``, ...), a RouteLLM model string
            (``"router-mf-0.11593"``), a saved router directory or a ``Router``.
        threshold: send a call to ``strong`` when its score is >= this value.
        strong_fraction: instead of a threshold, the share of calls for ``strong``
            (calibrated on ``calibration_prompts`` or the router's reference
            quantiles). Neither given means ``strong_fraction=0.5``.
        calibration_prompts: prompts to calibrate ``strong_fraction`` on.
        on_no_text: ``"strong"`` or ``"weak"``: where calls with no user text go.
        fallback: if the chosen model raises, call the other one; the response
            records it (``additional_kwargs["routellm"]["fallback"]``). Off by
            default. A stream falls back only if the error comes before its first chunk.

    Instantiate (any LlamaIndex LLMs: ``OpenAI``, ``Anthropic``, ``OpenAILike``, ...;
    LlamaIndex's offline ``MockLLM`` here, which echoes its prompt):
        >>> from llama_index.core.llms import MockLLM
        >>> llm = RouteLLM(strong=MockLLM(), weak=MockLLM(), router="random", threshold=0.5)

    Route without calling a model (the seeded random router; use the shipped
    default, ``router=None``, for learned decisions):
        >>> decision = llm.route("Prove that there are infinitely many primes.")
        >>> decision.role.value, round(decision.score, 3), decision.threshold
        ('weak', 0.221, 0.5)

    Invoke (every response records its decision):
        >>> response = llm.complete("What is 2 + 2?")
        >>> response.text
        'What is 2 + 2?'
        >>> record = response.additional_kwargs["routellm"]
        >>> record["role"], record["router"], record["fallback"]
        ('strong', 'random', None)

    Chat and stream:
        >>> from llama_index.core.llms import ChatMessage
        >>> llm.chat([ChatMessage(role="user", content="Say hi")]).additional_kwargs["routellm"]["role"]
        'weak'
        >>> "".join(r.delta for r in llm.stream_complete("Say hi"))
        'Say hi'

    Async:
        >>> import asyncio
        >>> asyncio.run(llm.acomplete("Say hi")).additional_kwargs["routellm"]["role"]
        'weak'

    In a query engine (``index.as_query_engine(llm=llm)``) the decision is made
    on the question; read it from :attr:`last_decision`. Tool calling
    (``chat_with_tools``, ``FunctionAgent``) works when both models are
    function-calling LLMs; the chosen model formats the tools and parses its calls.
    """

    strong: LLM = Field(description="LLM for the calls the router sends to the strong model.")
    weak: LLM = Field(description="LLM for the calls the router sends to the weak model.")
    router: Any = Field(
        default=None,
        description="Router: None/'default', a registry name, a RouteLLM model string, a path or a Router.",
    )
    threshold: Optional[float] = Field(
        default=None, description="Send a call to the strong model when its score is >= this value."
    )
    strong_fraction: Optional[float] = Field(
        default=None, description="Share of calls for the strong model (instead of a threshold)."
    )
    calibration_prompts: Optional[List[str]] = Field(
        default=None, description="Prompts on which strong_fraction is turned into a threshold."
    )
    on_no_text: str = Field(
        default="strong", description="'strong' or 'weak': where a call with no user text goes."
    )
    fallback: bool = Field(default=False, description="If the chosen model raises, call the other one.")

    _engine: RoutingEngine = PrivateAttr()
    _key: str = PrivateAttr(default_factory=lambda: uuid4().hex)

    def __init__(
        self,
        strong: LLM,
        weak: LLM,
        router: Union[str, Path, Router, None] = None,
        threshold: Optional[float] = None,
        strong_fraction: Optional[float] = None,
        calibration_prompts: Optional[Sequence[str]] = None,
        on_no_text: str = "strong",
        fallback: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(fallback, bool):
            raise ConfigError(f"fallback must be True or False, got {fallback!r}")
        for name, model in (("strong", strong), ("weak", weak)):
            if not isinstance(model, LLM):
                raise ConfigError(f"{name} must be a LlamaIndex LLM, got {type(model).__name__}: {model!r}")
        if calibration_prompts is not None:
            calibration_prompts = list(calibration_prompts)
        engine = RoutingEngine.from_settings(
            router=router,
            threshold=threshold,
            strong_fraction=strong_fraction,
            calibration_prompts=calibration_prompts,
            on_no_text=on_no_text,
        )
        super().__init__(
            strong=strong,
            weak=weak,
            router=router,
            threshold=threshold,
            strong_fraction=strong_fraction,
            calibration_prompts=calibration_prompts,
            on_no_text=on_no_text,
            fallback=fallback,
            **kwargs,
        )
        self._engine = engine
        if "callback_manager" in kwargs:
            self._share_callback_manager()

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "callback_manager":
            self._share_callback_manager()

    def _share_callback_manager(self) -> None:
        # Query engines and Settings hand their callback manager to the LLM they
        # are given; the model that answers is the one whose events it must see.
        for model in (self.strong, self.weak):
            model.callback_manager = self.callback_manager

    @classmethod
    def class_name(cls) -> str:
        return "RouteLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """What holds for both models: the smaller context window, the larger
        output reservation, chat and function calling only if both have them."""
        s, w = self.strong.metadata, self.weak.metadata
        return LLMMetadata(
            context_window=min(s.context_window, w.context_window),
            num_output=max(s.num_output, w.num_output),
            is_chat_model=s.is_chat_model and w.is_chat_model,
            is_function_calling_model=(
                s.is_function_calling_model
                and w.is_function_calling_model
                and isinstance(self.strong, FunctionCallingLLM)
                and isinstance(self.weak, FunctionCallingLLM)
            ),
            model_name=f"routellm[{self._engine.router.name}]({s.model_name}|{w.model_name})",
            system_role=s.system_role if s.system_role == w.system_role else MessageRole.SYSTEM,
        )

    # Routing -----------------------------------------------------------------
    @property
    def engine(self) -> RoutingEngine:
        """The routing engine (router, threshold, message policy) this LLM uses."""
        return self._engine

    @property
    def last_decision(self) -> Optional[Decision]:
        """The router's decision for the last call made in the current context
        (thread or asyncio task); the one place to read it for calls that return
        plain text (``predict``, ``stream``, a query engine's answer)."""
        return (_LAST_DECISIONS.get() or {}).get(self._key)

    def route(self, prompt: Union[str, Sequence[ChatMessage]]) -> Decision:
        """Decide for a question or a conversation without calling a model."""
        if isinstance(prompt, str):
            return self._engine.decide_one([("user", prompt)])
        return self._engine.decide_one(to_conversation(list(prompt)))

    def _remember(self, decision: Decision) -> Decision:
        _LAST_DECISIONS.set({**(_LAST_DECISIONS.get() or {}), self._key: decision})
        return decision

    def _decide(self, conversation: List[Tuple[str, Any]]) -> Decision:
        return self._remember(self._engine.decide_one(conversation))

    async def _adecide(self, conversation: List[Tuple[str, Any]]) -> Decision:
        # The router may run a model (embeddings); keep it off the event loop.
        return self._remember(await asyncio.to_thread(self._engine.decide_one, conversation))

    def _model(self, role: Role) -> LLM:
        return self.strong if role is Role.STRONG else self.weak

    def _plan(self, decision: Decision, tools: bool) -> List[Tuple[Role, LLM]]:
        """The models to try, in order: the chosen one, then the other with ``fallback``."""
        roles = attempt_order(decision, self.fallback)
        plan = [(role, self._model(role)) for role in roles]
        if tools:
            for role, model in plan:
                if not isinstance(model, FunctionCallingLLM):
                    raise ConfigError(
                        f"tool calling needs both models to be function-calling LLMs; the {role.value} model "
                        f"{type(model).__name__} is not a FunctionCallingLLM"
                    )
        return plan

    def _call(
        self, decision: Decision, call: Callable[[Any], Any], tag: bool = True, tools: bool = False
    ) -> Any:
        failure = None
        plan = self._plan(decision, tools)
        for attempt, (role, model) in enumerate(plan):
            try:
                result = call(model)
            except Exception as exc:
                if attempt + 1 == len(plan):
                    raise
                failure = (role, model, exc)
                continue
            return _tag(result, _record(decision, role, model, failure)) if tag else result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acall(
        self, decision: Decision, call: Callable[[Any], Awaitable[Any]], tag: bool = True, tools: bool = False
    ) -> Any:
        failure = None
        plan = self._plan(decision, tools)
        for attempt, (role, model) in enumerate(plan):
            try:
                result = await call(model)
            except Exception as exc:
                if attempt + 1 == len(plan):
                    raise
                failure = (role, model, exc)
                continue
            return _tag(result, _record(decision, role, model, failure)) if tag else result
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream(
        self, decision: Decision, call: Callable[[Any], Iterator[Any]], tag: bool = True, tools: bool = False
    ) -> Generator[Any, None, None]:
        # The chosen model's call starts now, as a direct call would; a fallback
        # happens only if the error comes before the first chunk.
        plan = self._plan(decision, tools)
        try:
            first: Any = call(plan[0][1])
        except Exception as exc:
            if len(plan) == 1:
                raise
            first = exc
        return self._stream_attempts(decision, plan, call, first, tag)

    def _stream_attempts(
        self, decision: Decision, plan: List[Tuple[Role, LLM]], call: Callable[[Any], Iterator[Any]],
        first: Any, tag: bool,
    ) -> Generator[Any, None, None]:
        failure = None
        for attempt, (role, model) in enumerate(plan):
            try:
                if isinstance(first, Exception):
                    raise first
                stream = first if attempt == 0 else call(model)
                head = next(stream, _END)
            except Exception as exc:
                if attempt + 1 == len(plan):
                    raise
                failure, first = (role, model, exc), None
                continue
            record = _record(decision, role, model, failure)
            if head is not _END:
                yield _tag(head, record) if tag else head
                for chunk in stream:
                    yield _tag(chunk, record) if tag else chunk
            return

    async def _astream(
        self, decision: Decision, call: Callable[[Any], Awaitable[Any]], tag: bool = True, tools: bool = False
    ) -> AsyncGenerator[Any, None]:
        plan = self._plan(decision, tools)
        try:
            first: Any = await call(plan[0][1])
        except Exception as exc:
            if len(plan) == 1:
                raise
            first = exc
        return self._astream_attempts(decision, plan, call, first, tag)

    async def _astream_attempts(
        self, decision: Decision, plan: List[Tuple[Role, LLM]], call: Callable[[Any], Awaitable[Any]],
        first: Any, tag: bool,
    ) -> AsyncGenerator[Any, None]:
        failure = None
        for attempt, (role, model) in enumerate(plan):
            try:
                if isinstance(first, Exception):
                    raise first
                stream = first if attempt == 0 else await call(model)
                head = await anext(stream, _END)
            except Exception as exc:
                if attempt + 1 == len(plan):
                    raise
                failure, first = (role, model, exc), None
                continue
            record = _record(decision, role, model, failure)
            if head is not _END:
                yield _tag(head, record) if tag else head
                async for chunk in stream:
                    yield _tag(chunk, record) if tag else chunk
            return

    # Chat and completion -----------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        decision = self._decide(to_conversation(messages))
        return self._call(decision, lambda m: m.chat(messages, **kwargs))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        decision = self._decide(to_conversation(messages))
        return self._stream(decision, lambda m: m.stream_chat(messages, **kwargs))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        decision = await self._adecide(to_conversation(messages))
        return await self._acall(decision, lambda m: m.achat(messages, **kwargs))

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        decision = await self._adecide(to_conversation(messages))
        return await self._astream(decision, lambda m: m.astream_chat(messages, **kwargs))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        decision = self._decide(_prompt_conversation(prompt))
        return self._call(decision, lambda m: m.complete(prompt, formatted=formatted, **kwargs))

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        decision = self._decide(_prompt_conversation(prompt))
        return self._stream(decision, lambda m: m.stream_complete(prompt, formatted=formatted, **kwargs))

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        decision = await self._adecide(_prompt_conversation(prompt))
        return await self._acall(decision, lambda m: m.acomplete(prompt, formatted=formatted, **kwargs))

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        decision = await self._adecide(_prompt_conversation(prompt))
        return await self._astream(decision, lambda m: m.astream_complete(prompt, formatted=formatted, **kwargs))

    # Prompt templates (query engines): route on query_str, the chosen model formats
    def _template_conversation(
        self, prompt: BasePromptTemplate, prompt_args: Dict[str, Any]
    ) -> List[Tuple[str, Any]]:
        """A RAG template's question (``query_str``) if it has one, else the formatted messages."""
        question = ChainMap(prompt_args, getattr(prompt, "kwargs", {}) or {}).get("query_str")
        if isinstance(question, str):
            return [("user", question)]
        return to_conversation(prompt.format_messages(llm=self, **prompt_args))

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        return self._call(decision, lambda m: m.predict(prompt, **prompt_args), tag=False)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> Generator[str, None, None]:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        return self._stream(decision, lambda m: m.stream(prompt, **prompt_args), tag=False)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        return await self._acall(decision, lambda m: m.apredict(prompt, **prompt_args), tag=False)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> AsyncGenerator[str, None]:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        return await self._astream(decision, lambda m: m.astream(prompt, **prompt_args), tag=False)

    def structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        return self._call(
            decision, lambda m: m.structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args),
            tag=False,
        )

    async def astructured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        return await self._acall(
            decision, lambda m: m.astructured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args),
            tag=False,
        )

    def stream_structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        return self._stream(
            decision,
            lambda m: m.stream_structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args),
            tag=False,
        )

    async def astream_structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        return await self._astream(
            decision,
            lambda m: m.astream_structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args),
            tag=False,
        )

    # Function calling: the chosen model formats the tools and parses its calls
    def chat_with_tools(
        self,
        tools: Sequence["BaseTool"],
        user_msg: Optional[Union[str, ChatMessage]] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = self._decide(_tools_conversation(user_msg, chat_history))
        return self._call(decision, lambda m: m.chat_with_tools(tools, **args), tools=True)

    async def achat_with_tools(
        self,
        tools: Sequence["BaseTool"],
        user_msg: Optional[Union[str, ChatMessage]] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = await self._adecide(_tools_conversation(user_msg, chat_history))
        return await self._acall(decision, lambda m: m.achat_with_tools(tools, **args), tools=True)

    def stream_chat_with_tools(
        self,
        tools: Sequence["BaseTool"],
        user_msg: Optional[Union[str, ChatMessage]] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseGen:
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = self._decide(_tools_conversation(user_msg, chat_history))
        return self._stream(decision, lambda m: m.stream_chat_with_tools(tools, **args), tools=True)

    async def astream_chat_with_tools(
        self,
        tools: Sequence["BaseTool"],
        user_msg: Optional[Union[str, ChatMessage]] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseAsyncGen:
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = await self._adecide(_tools_conversation(user_msg, chat_history))
        return await self._astream(decision, lambda m: m.astream_chat_with_tools(tools, **args), tools=True)

    def _prepare_chat_with_tools(
        self,
        tools: Sequence["BaseTool"],
        user_msg: Optional[Union[str, ChatMessage]] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        # The chosen model formats the tools; the same conversation then routes
        # ``chat(**prepared)`` to that same model.
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = self._decide(_tools_conversation(user_msg, chat_history))
        model = self._plan(decision, tools=True)[0][1]
        return model._prepare_chat_with_tools_compat(tools, **args)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> List[ToolSelection]:
        """Parse tool calls with the model that wrote ``response`` (read from its
        decision record; a response without one, such as an agent's empty
        placeholder, is parsed by the strong model)."""
        record = response.additional_kwargs.get(DECISION_KEY) or {}
        model = self.weak if record.get("role") == Role.WEAK.value else self.strong
        if not isinstance(model, FunctionCallingLLM):
            raise ConfigError(f"the model {type(model).__name__} that wrote this response cannot call tools")
        return model.get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)


_END = object()


def _prompt_conversation(prompt: str) -> List[Tuple[str, Any]]:
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}: {prompt!r}")
    return [("user", prompt)]


def _tool_args(
    user_msg: Optional[Union[str, ChatMessage]], chat_history: Optional[List[ChatMessage]], verbose: bool,
    allow_parallel_tool_calls: bool, tool_required: bool, kwargs: Dict[str, Any],
) -> Dict[str, Any]:
    return {
        "user_msg": user_msg, "chat_history": chat_history, "verbose": verbose,
        "allow_parallel_tool_calls": allow_parallel_tool_calls, "tool_required": tool_required, **kwargs,
    }


def _record(
    decision: Decision, role: Role, model: LLM, failure: Optional[Tuple[Role, LLM, BaseException]]
) -> Dict[str, Any]:
    """The shared record (:func:`shared_core.engine.decision_record`, the LangChain
    wrapper's format too) with LlamaIndex model names."""
    named = () if failure is None else (Failure(failure[0], failure[1].metadata.model_name, failure[2]),)
    return decision_record(decision, role, model.metadata.model_name, named)


def _tag(response: Any, record: Dict[str, Any]) -> Any:
    response.additional_kwargs[DECISION_KEY] = dict(record)
    return response
