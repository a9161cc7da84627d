"""``RouteLLM``: a LlamaIndex LLM that sends each call to a strong or a weak LLM.

All routing logic (router, threshold or strong fraction, which text is scored)
lives in :class:`shared_core.engine.RoutingEngine`; this class converts
LlamaIndex messages to ``(role, content)`` pairs and delegates every call to the
chosen model. It emits no instrumentation events of its own: the chosen model
emits them, once, exactly as if it had been called directly.
"""

from __future__ import annotations

from collections import ChainMap
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncGenerator, Dict, Generator, List, Optional, Sequence, Tuple, Union
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

from shared_core.engine import RoutingEngine
from shared_core.errors import ConfigError
from shared_core.routers import Decision, Router

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

#: Key under which every response's ``additional_kwargs`` records the decision.
DECISION_KEY = "routellm"

#: The last decision of each RouteLLM (by instance key) in the current context.
#: Module level and copied on write, so instances stay deep-copyable and picklable.
_LAST_DECISIONS: ContextVar[Optional[Dict[str, Decision]]] = ContextVar("routellm_last_decisions", default=None)

_ROLES = {
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
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
        pairs.append((_ROLES.get(MessageRole(message.role), str(message.role)), message.blocks))
    return pairs


def _tools_conversation(
    user_msg: Optional[Union[str, ChatMessage]], chat_history: Optional[Sequence[ChatMessage]]
) -> List[ChatMessage]:
    messages = list(chat_history or [])
    if isinstance(user_msg, str):
        messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
    elif user_msg is not None:
        messages.append(user_msg)
    return messages


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

    Instantiate:
        >>> from llama_index.core.llms import MockLLM
        >>> llm = RouteLLM(strong=MockLLM(), weak=MockLLM(), router="random", threshold=0.5)

    Route without calling a model:
        >>> llm.route("What is 2 + 2?").role.value in ("strong", "weak")
        True

    Invoke (the decision is on every response):
        >>> response = llm.complete("What is 2 + 2?")
        >>> response.additional_kwargs["routellm"]["role"] == llm.route("What is 2 + 2?").role.value
        True

    Stream:
        >>> "".join(r.delta for r in llm.stream_complete("What is 2 + 2?"))
        'What is 2 + 2?'

    Async:
        >>> import asyncio
        >>> asyncio.run(llm.acomplete("hi")).text
        'hi'
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
        **kwargs: Any,
    ) -> None:
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
            **kwargs,
        )
        self._engine = engine

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
        return self._engine

    @property
    def last_decision(self) -> Optional[Decision]:
        """The decision of the last call made in the current context (thread or task)."""
        return (_LAST_DECISIONS.get() or {}).get(self._key)

    def route(self, prompt: Union[str, Sequence[ChatMessage]]) -> Decision:
        """Decide for a question or a conversation without calling a model."""
        if isinstance(prompt, str):
            return self._engine.decide_one([("user", prompt)])
        return self._engine.decide_one(to_conversation(list(prompt)))

    def _choose(self, conversation: List[Tuple[str, Any]]) -> Tuple[LLM, Dict[str, Any]]:
        decision = self._engine.decide_one(conversation)
        _LAST_DECISIONS.set({**(_LAST_DECISIONS.get() or {}), self._key: decision})
        model = self.strong if decision.is_strong else self.weak
        return model, {**decision.to_dict(), "model": model.metadata.model_name}

    def _choose_messages(self, messages: Sequence[ChatMessage]) -> Tuple[LLM, Dict[str, Any]]:
        return self._choose(to_conversation(messages))

    def _choose_prompt(self, prompt: str) -> Tuple[LLM, Dict[str, Any]]:
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}: {prompt!r}")
        return self._choose([("user", prompt)])

    def _choose_template(self, prompt: BasePromptTemplate, prompt_args: Dict[str, Any]) -> LLM:
        """Route a prompt template on its ``query_str`` (a RAG question) if it has one."""
        question = ChainMap(prompt_args, getattr(prompt, "kwargs", {}) or {}).get("query_str")
        if isinstance(question, str):
            model, _ = self._choose([("user", question)])
        else:
            model, _ = self._choose_messages(prompt.format_messages(llm=self, **prompt_args))
        return model

    def _tool_model(self, model: LLM) -> FunctionCallingLLM:
        if not isinstance(model, FunctionCallingLLM):
            role = "strong" if model is self.strong else "weak"
            raise ConfigError(
                f"tool calling needs both models to be function-calling LLMs; the {role} model "
                f"{type(model).__name__} is not a FunctionCallingLLM"
            )
        return model

    # Chat and completion -----------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        model, record = self._choose_messages(messages)
        return _tag(model.chat(messages, **kwargs), record)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        model, record = self._choose_messages(messages)
        return _tag_stream(model.stream_chat(messages, **kwargs), record)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        model, record = self._choose_messages(messages)
        return _tag(await model.achat(messages, **kwargs), record)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        model, record = self._choose_messages(messages)
        return _atag_stream(await model.astream_chat(messages, **kwargs), record)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        model, record = self._choose_prompt(prompt)
        return _tag(model.complete(prompt, formatted=formatted, **kwargs), record)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        model, record = self._choose_prompt(prompt)
        return _tag_stream(model.stream_complete(prompt, formatted=formatted, **kwargs), record)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        model, record = self._choose_prompt(prompt)
        return _tag(await model.acomplete(prompt, formatted=formatted, **kwargs), record)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        model, record = self._choose_prompt(prompt)
        return _atag_stream(await model.astream_complete(prompt, formatted=formatted, **kwargs), record)

    # Prompt templates (query engines): route on query_str, the chosen model formats
    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        return self._choose_template(prompt, prompt_args).predict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> Generator[str, None, None]:
        return self._choose_template(prompt, prompt_args).stream(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        return await self._choose_template(prompt, prompt_args).apredict(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> AsyncGenerator[str, None]:
        return await self._choose_template(prompt, prompt_args).astream(prompt, **prompt_args)

    def structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        model = self._choose_template(prompt, prompt_args)
        return model.structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args)

    async def astructured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        model = self._choose_template(prompt, prompt_args)
        return await model.astructured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args)

    def stream_structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        model = self._choose_template(prompt, prompt_args)
        return model.stream_structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args)

    async def astream_structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        model = self._choose_template(prompt, prompt_args)
        return await model.astream_structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args)

    # Function calling: the chosen model formats the tools and parses its calls
    def _choose_tools(
        self, user_msg: Optional[Union[str, ChatMessage]], chat_history: Optional[Sequence[ChatMessage]]
    ) -> Tuple[FunctionCallingLLM, Dict[str, Any]]:
        model, record = self._choose_messages(_tools_conversation(user_msg, chat_history))
        return self._tool_model(model), record

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
        model, record = self._choose_tools(user_msg, chat_history)
        response = model.chat_with_tools(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )
        return _tag(response, record)

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
        model, record = self._choose_tools(user_msg, chat_history)
        response = await model.achat_with_tools(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )
        return _tag(response, record)

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
        model, record = self._choose_tools(user_msg, chat_history)
        stream = model.stream_chat_with_tools(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )
        return _tag_stream(stream, record)

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
        model, record = self._choose_tools(user_msg, chat_history)
        stream = await model.astream_chat_with_tools(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )
        return _atag_stream(stream, record)

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
        model, _ = self._choose_tools(user_msg, chat_history)
        return model._prepare_chat_with_tools_compat(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> List[ToolSelection]:
        """Parse tool calls with the model that wrote ``response`` (read from its
        decision record; a response without one, such as an agent's empty
        placeholder, is parsed by the strong model)."""
        record = response.additional_kwargs.get(DECISION_KEY) or {}
        model = self.weak if record.get("role") == "weak" else self.strong
        return self._tool_model(model).get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )


def _tag(response: Any, record: Dict[str, Any]) -> Any:
    response.additional_kwargs[DECISION_KEY] = dict(record)
    return response


def _tag_stream(stream: Any, record: Dict[str, Any]) -> Generator[Any, None, None]:
    for chunk in stream:
        yield _tag(chunk, record)


async def _atag_stream(stream: Any, record: Dict[str, Any]) -> AsyncGenerator[Any, None]:
    async for chunk in stream:
        yield _tag(chunk, record)
