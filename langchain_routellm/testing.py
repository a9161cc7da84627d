"""Test doubles: a deterministic, offline chat model with tool calling.

For unit tests, docstrings and the cookbook, never for production: nothing here
calls a model.

``FakeToolChatModel`` answers ``"[<model_name>] <last human text>"``, calls a
bound tool when the last message is a human one (arguments made up from the
tool's JSON schema: the first quoted text or the question for strings, the
first number of the question for numbers), answers from the tool's result when
the last message is a tool message, honours ``stop``, streams word by word, and
reports usage (one token a whitespace-separated word). Its token counter needs
no tokenizer.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from shared_core.policy import content_text

_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class FakeToolChatModel(BaseChatModel):
    """Deterministic chat model with tools, streaming and usage; no network, no weights."""

    model_name: str = Field(default="fake-chat", description="Name reported in response metadata.")
    fail: Any = Field(
        default=False,
        description="Raise on every call, to exercise fallbacks: True raises ConnectionError('<model_name> is "
        "down'), as a provider that cannot be reached; an exception instance is raised as it is.",
    )
    delay: float = Field(default=0.0, description="Seconds to wait before answering (to exercise timeouts).")

    @property
    def _llm_type(self) -> str:
        return "fake-tool-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(
        self,
        tools: Sequence[Union[dict[str, Any], type, Callable, Any]],
        *,
        tool_choice: Optional[Union[str, dict, bool]] = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())

    # The answer ------------------------------------------------------------------
    def _answer(self, messages: list[BaseMessage], stop: Optional[list[str]], kwargs: dict[str, Any]) -> AIMessage:
        if self.delay:
            time.sleep(self.delay)
        if isinstance(self.fail, BaseException):
            raise self.fail
        if self.fail:
            raise ConnectionError(f"{self.model_name} is down")
        tools = kwargs.get("tools") or []
        tool_choice = kwargs.get("tool_choice")
        last = messages[-1] if messages else None
        human = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        question = content_text(human.content) if human is not None else ""
        tool_calls: list[dict[str, Any]] = []
        if isinstance(last, ToolMessage):
            text = f"[{self.model_name}] The tool said: {content_text(last.content)}"
        elif tools and isinstance(last, HumanMessage) and tool_choice not in ("none", False):
            spec = _chosen_tool(tools, tool_choice)["function"]
            args = _make_args(spec.get("parameters") or {}, question)
            tool_calls = [{"name": spec["name"], "args": args, "id": f"call_{uuid.uuid4().hex[:12]}",
                           "type": "tool_call"}]
            text = ""
        else:
            text = f"[{self.model_name}] {question or 'Hello.'}"
        for s in stop or []:
            if s and s in text:
                text = text[: text.index(s)]
        n_in = sum(len(content_text(m.content).split()) + 1 for m in messages)
        n_out = len(text.split()) + sum(len(json.dumps(c["args"]).split()) for c in tool_calls)
        return AIMessage(
            content=text,
            tool_calls=tool_calls,
            usage_metadata=UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out),
            response_metadata={"model_name": self.model_name},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, stop, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._answer(messages, stop, kwargs)
        pieces = re.findall(r"\S+\s*", message.content) if isinstance(message.content, str) else []
        for piece in pieces:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"], ensure_ascii=False), "id": c["id"],
                     "index": i, "type": "tool_call_chunk"}
                    for i, c in enumerate(message.tool_calls)
                ],
                usage_metadata=message.usage_metadata,
                response_metadata={"model_name": self.model_name},
                chunk_position="last",
            )
        )


def _chosen_tool(tools: list[dict[str, Any]], tool_choice: Any) -> dict[str, Any]:
    name = None
    if isinstance(tool_choice, str) and tool_choice not in ("any", "auto", "required"):
        name = tool_choice
    elif isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    for t in tools:
        if name is None or t["function"]["name"] == name:
            return t
    raise ValueError(f"tool_choice {tool_choice!r} names no bound tool; bound: {[t['function']['name'] for t in tools]}")


def _make_args(schema: dict[str, Any], question: str) -> dict[str, Any]:
    quoted = _QUOTED.search(question)
    text = next(g for g in quoted.groups() if g) if quoted else question
    number = _NUMBER.search(question)
    args: dict[str, Any] = {}
    for name in schema.get("required", []):
        prop = schema.get("properties", {}).get(name, {})
        kind = prop.get("type") or next((a.get("type") for a in prop.get("anyOf", []) if a.get("type") != "null"), "string")
        if kind == "integer":
            args[name] = int(float(number.group())) if number else 3
        elif kind == "number":
            args[name] = float(number.group()) if number else 3.0
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = text or name
    return args
