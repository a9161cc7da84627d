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
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.prompts import BasePromptTemplate

from shared_core.attempts import Attempts
from shared_core.engine import outcome_record
from shared_core.errors import ConfigError
from shared_core.routers import Decision, Role
from shared_core.settings import RoutedModel, pop_timeout

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


class RouteLLM(RoutedModel, FunctionCallingLLM):
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
        fallback: if the chosen model fails with a ``fallback_on`` error, call the
            other one; the response records it (``additional_kwargs["routellm"]``
            ``["fallback"]`` and ``["failures"]``). Off by default. A stream falls
            back only if the error comes before its first chunk. If both fail, one
            ``AllModelsFailedError`` carries both errors.
        fallback_on: exception types or a predicate; ``None`` (default): what
            providers raise when down or overloaded (connection errors, timeouts,
            HTTP 429 and 5xx), never a ``TypeError`` or ``ValueError``.
        timeout: seconds each model may take (streaming: for each chunk); running
            out raises ``ModelTimeoutError`` (and falls back with ``fallback``).
            Also a call argument of ``chat``, ``complete``, their stream and async
            forms and the tool calls: ``llm.complete(prompt, timeout=5)``.

    These settings are :class:`shared_core.settings.RoutingSettings`, shared with
    the LangChain wrappers; setting one later (``llm.threshold = 0.7``) takes
    effect. Unknown keyword arguments are refused. The models' own
    ``callback_manager`` is left alone: a callback manager given to this LLM (a
    query engine hands it one) sees the chosen model's calls as well.

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

    Change a setting (the routing follows; a bad value raises and changes nothing):
        >>> llm.threshold = 0.1
        >>> llm.route("Prove that there are infinitely many primes.").role.value
        'strong'

    In a query engine (``index.as_query_engine(llm=llm)``) the decision is made
    on the question; read it from :attr:`last_decision`. Tool calling
    (``chat_with_tools``, ``FunctionAgent``) works when both models are
    function-calling LLMs; the chosen model formats the tools and parses its calls.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    strong: LLM = Field(description="LLM for the calls the router sends to the strong model.")
    weak: LLM = Field(description="LLM for the calls the router sends to the weak model.")

    _key: str = PrivateAttr(default_factory=lambda: uuid4().hex)

    def __init__(self, strong: LLM, weak: LLM, **kwargs: Any) -> None:
        for name, model in (("strong", strong), ("weak", weak)):
            if not isinstance(model, LLM):
                raise ConfigError(f"{name} must be a LlamaIndex LLM, got {type(model).__name__}: {model!r}")
        super().__init__(strong=strong, weak=weak, **kwargs)

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
            model_name=f"routellm[{self.engine.router.name}]({s.model_name}|{w.model_name})",
            system_role=s.system_role if s.system_role == w.system_role else MessageRole.SYSTEM,
        )

    # Routing -----------------------------------------------------------------
    @property
    def last_decision(self) -> Optional[Decision]:
        """The router's decision for the last call made in the current context
        (thread or asyncio task); the one place to read it for calls that return
        plain text (``predict``, ``stream``, a query engine's answer)."""
        return (_LAST_DECISIONS.get() or {}).get(self._key)

    def route(self, prompt: Union[str, Sequence[ChatMessage]]) -> Decision:
        """Decide for a question or a conversation without calling a model."""
        if isinstance(prompt, str):
            return self.engine.decide_one([("user", prompt)])
        return self.engine.decide_one(to_conversation(list(prompt)))

    def _remember(self, decision: Decision) -> Decision:
        _LAST_DECISIONS.set({**(_LAST_DECISIONS.get() or {}), self._key: decision})
        return decision

    def _decide(self, conversation: List[Tuple[str, Any]]) -> Decision:
        return self._remember(self.engine.decide_one(conversation))

    async def _adecide(self, conversation: List[Tuple[str, Any]]) -> Decision:
        # The router may run a model (embeddings); keep it off the event loop.
        return self._remember(await asyncio.to_thread(self.engine.decide_one, conversation))

    def _model(self, role: Role) -> LLM:
        """The model for ``role``, seeing this LLM's callback manager too (a copy
        of the model when it must: the user's model is not changed)."""
        model = self.strong if role is Role.STRONG else self.weak
        ours = [h for h in self.callback_manager.handlers if h not in model.callback_manager.handlers]
        if not ours:
            return model
        manager = CallbackManager(handlers=[*model.callback_manager.handlers, *ours])
        return model.model_copy(update={"callback_manager": manager})

    def _plan(self, decision: Decision, tools: bool, timeout: Optional[float] = None) -> Attempts[LLM]:
        """The attempt loop: the chosen model, then the other with ``fallback``."""
        attempts = self._attempts(decision, self._model, timeout=timeout)
        if tools:
            for role, model in attempts.plan:
                if not isinstance(model, FunctionCallingLLM):
                    raise ConfigError(
                        f"tool calling needs both models to be function-calling LLMs; the {role.value} model "
                        f"{type(model).__name__} is not a FunctionCallingLLM"
                    )
        return attempts

    def _call(
        self, decision: Decision, call: Callable[[Any], Any], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None,
    ) -> Any:
        outcome = self._plan(decision, tools, timeout).run(call)
        return _tag(outcome.value, outcome_record(decision, outcome)) if tag else outcome.value

    async def _acall(
        self, decision: Decision, call: Callable[[Any], Awaitable[Any]], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None,
    ) -> Any:
        outcome = await self._plan(decision, tools, timeout).arun(call)
        return _tag(outcome.value, outcome_record(decision, outcome)) if tag else outcome.value

    def _stream(
        self, decision: Decision, call: Callable[[Any], Iterator[Any]], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None,
    ) -> Generator[Any, None, None]:
        # The chosen model's call starts now, as a direct call would (eager); a
        # fallback happens only if the error comes before the first chunk.
        chunks = self._plan(decision, tools, timeout).stream(call, eager=True)

        def tagged() -> Generator[Any, None, None]:
            record = None
            for chunk in chunks:
                if tag:
                    record = record or outcome_record(decision, chunks.outcome)
                    chunk = _tag(chunk, record)
                yield chunk

        return tagged()

    async def _astream(
        self, decision: Decision, call: Callable[[Any], Awaitable[Any]], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None,
    ) -> AsyncGenerator[Any, None]:
        chunks = await self._plan(decision, tools, timeout).astream(call).open_first()

        async def tagged() -> AsyncGenerator[Any, None]:
            record = None
            async for chunk in chunks:
                if tag:
                    record = record or outcome_record(decision, chunks.outcome)
                    chunk = _tag(chunk, record)
                yield chunk

        return tagged()

    # Chat and completion -----------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        decision, timeout = self._decide(to_conversation(messages)), pop_timeout(kwargs)
        return self._call(decision, lambda m: m.chat(messages, **kwargs), timeout=timeout)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        decision, timeout = self._decide(to_conversation(messages)), pop_timeout(kwargs)
        return self._stream(decision, lambda m: m.stream_chat(messages, **kwargs), timeout=timeout)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        decision, timeout = await self._adecide(to_conversation(messages)), pop_timeout(kwargs)
        return await self._acall(decision, lambda m: m.achat(messages, **kwargs), timeout=timeout)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        decision, timeout = await self._adecide(to_conversation(messages)), pop_timeout(kwargs)
        return await self._astream(decision, lambda m: m.astream_chat(messages, **kwargs), timeout=timeout)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        decision, timeout = self._decide(_prompt_conversation(prompt)), pop_timeout(kwargs)
        return self._call(decision, lambda m: m.complete(prompt, formatted=formatted, **kwargs), timeout=timeout)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        decision, timeout = self._decide(_prompt_conversation(prompt)), pop_timeout(kwargs)
        return self._stream(decision, lambda m: m.stream_complete(prompt, formatted=formatted, **kwargs),
                            timeout=timeout)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        decision, timeout = await self._adecide(_prompt_conversation(prompt)), pop_timeout(kwargs)
        return await self._acall(decision, lambda m: m.acomplete(prompt, formatted=formatted, **kwargs),
                                 timeout=timeout)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        decision, timeout = await self._adecide(_prompt_conversation(prompt)), pop_timeout(kwargs)
        return await self._astream(decision, lambda m: m.astream_complete(prompt, formatted=formatted, **kwargs),
                                   timeout=timeout)

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
        timeout = pop_timeout(kwargs)
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = self._decide(_tools_conversation(user_msg, chat_history))
        return self._call(decision, lambda m: m.chat_with_tools(tools, **args), tools=True, timeout=timeout)

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
        timeout = pop_timeout(kwargs)
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = await self._adecide(_tools_conversation(user_msg, chat_history))
        return await self._acall(decision, lambda m: m.achat_with_tools(tools, **args), tools=True, timeout=timeout)

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
        timeout = pop_timeout(kwargs)
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = self._decide(_tools_conversation(user_msg, chat_history))
        return self._stream(decision, lambda m: m.stream_chat_with_tools(tools, **args), tools=True, timeout=timeout)

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
        timeout = pop_timeout(kwargs)
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        decision = await self._adecide(_tools_conversation(user_msg, chat_history))
        return await self._astream(decision, lambda m: m.astream_chat_with_tools(tools, **args), tools=True, timeout=timeout)

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
        model = self._plan(decision, tools=True).plan[0][1]
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


def _tag(response: Any, record: Dict[str, Any]) -> Any:
    response.additional_kwargs[DECISION_KEY] = dict(record)
    return response
