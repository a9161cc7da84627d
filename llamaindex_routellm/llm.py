"""``RouteLLM``: a LlamaIndex LLM that sends each call to a strong or a weak LLM.

All routing logic (router, threshold or strong fraction, which text is scored)
lives in :class:`shared_core.engine.RoutingEngine`; this class converts
LlamaIndex messages to ``(role, content)`` pairs and delegates every call to the
chosen model. The chosen model emits its instrumentation events, once, exactly
as if it had been called directly; ``RouteLLM``'s own two are for the savings
ledger (:class:`~llamaindex_routellm.LedgerHandler`): a :class:`RejectedAnswersEvent`
when a call fails after its escalation checks rejected answers, and, only while a
``LedgerHandler`` is attached, a :class:`RoutedCallEvent` at the end of each call
that returns plain text or an object (``predict``, ``stream``, a query engine's
answer, structured prediction), which has no response to carry its decision record.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import ChainMap, abc
from dataclasses import dataclass
from functools import lru_cache, partial
from contextvars import ContextVar
from pathlib import PurePath
from typing import (
    TYPE_CHECKING, Any, AsyncGenerator, Awaitable, Callable, Dict, Generator, Iterator, List, Optional,
    Sequence, Tuple, Union,
)
from uuid import uuid4

from llama_index.core.base.llms.generic_utils import messages_to_prompt as generic_messages_to_prompt
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
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, TypeAdapter, field_serializer
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection, default_completion_to_prompt
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.types import PydanticProgramMode

from shared_core.attempts import Attempts, Outcome, rejected_answers
from shared_core.controller import Controller
from shared_core.engine import rejected_records
from shared_core.errors import ConfigError
from shared_core.escalation import AnswerView, CallContext, ToolCall
from shared_core.ledger import completion_token_bound, prompt_token_bound
from shared_core.policy import content_text
from shared_core.routers import Decision, Role, Router
from shared_core.settings import RoutedModel, ladder_ends, pop_timeout
from shared_core.stream_usage import Refusals, aretried_stream, refuses_stream_options, retried_stream
from llamaindex_routellm.watching import Watch, watch_for

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

#: Spans for the tool calls too (LlamaIndex spans chat and complete itself), so that
#: an instrumentation handler (the ledger) sees every tagged response.
dispatcher = get_dispatcher(__name__)

#: Key under which every response's ``additional_kwargs`` records the decision.
DECISION_KEY = "routellm"

class _LastDecisions:
    """The last decision of each RouteLLM (by instance key) made in one context (a thread,
    or an asyncio task), and the context it was copied from (``parent``).

    A call made in a context copied from the caller's (an asyncio task; the thread a
    LlamaIndex streaming chat engine starts with a copy of the context and makes the
    model call in) records its decision in its own holder and in every holder it
    descends from, so that the caller reads it, and concurrent tasks each read their own."""

    __slots__ = ("owner", "parent", "latest")

    def __init__(self, owner: Tuple[int, Any], parent: Optional["_LastDecisions"]) -> None:
        self.owner, self.parent, self.latest = owner, parent, {}

    def record(self, key: str, decision: Decision) -> None:
        holder: Optional[_LastDecisions] = self
        while holder is not None:
            holder.latest[key] = decision  # one item: atomic, also from several threads
            holder = holder.parent


#: The holder of the current context (module level, so instances stay deep-copyable and picklable).
_LAST_DECISIONS: ContextVar[Optional[_LastDecisions]] = ContextVar("routellm_last_decisions", default=None)


def _context_owner() -> Tuple[int, Any]:
    """What a context belongs to: its thread and, in one, its asyncio task."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        task = None
    return threading.get_ident(), task


def _own_decisions() -> _LastDecisions:
    """The current context's own holder: the one it inherited if it made it, else a new
    one below it."""
    holder, owner = _LAST_DECISIONS.get(), _context_owner()
    if holder is None or holder.owner[0] != owner[0] or holder.owner[1] is not owner[1]:
        holder = _LastDecisions(owner, holder)
        _LAST_DECISIONS.set(holder)
    return holder

#: A model as ``strong`` and ``weak`` are written by ``to_dict``: its ``LLM`` fields only
#: (never the provider's key or endpoint).
_AS_LLM = TypeAdapter(LLM)

#: The ``LLM`` fields LlamaIndex applies inside the model that formats the prompt
#: (``predict`` adds ``system_prompt``, a completion model runs ``messages_to_prompt``,
#: the callbacks take the ``rate_limiter``), with their defaults: set on ``RouteLLM``,
#: they are given to the chosen model (a copy), as if set on it.
_PROMPT_SETTINGS: Dict[str, Any] = {
    "system_prompt": None, "messages_to_prompt": generic_messages_to_prompt,
    "completion_to_prompt": default_completion_to_prompt, "output_parser": None,
    "pydantic_program_mode": PydanticProgramMode.DEFAULT, "query_wrapper_prompt": None, "rate_limiter": None,
}

#: Template variables that hold the user's own question, routed on instead of the formatted
#: prompt: ``query_str`` in LlamaIndex's RAG templates (the prompt holds the retrieved text),
#: ``question`` in the condense template of its ``condense_question`` chat engine (the prompt
#: holds the chat history) and its other templates that name the user's question so
#: (text-to-SQL, text-to-Cypher, keyword extraction). ``condense_plus_context`` formats its
#: condense prompt itself and calls ``complete``; see :func:`_formatted_question`.
_QUESTION_VARS = ("query_str", "question")


@lru_cache(maxsize=1)
def _formatted_templates() -> Tuple[re.Pattern[str], ...]:
    """LlamaIndex's templates that reach ``complete`` already formatted, as patterns whose
    ``question`` group is the user's question: the default condense template of the
    ``condense_plus_context`` chat engine (the prompt holds the chat history). Read from
    LlamaIndex itself, so a change of its wording is followed; a template of your own is
    not recognised and is routed on as written."""
    from llama_index.core.chat_engine.condense_plus_context import DEFAULT_CONDENSE_PROMPT_TEMPLATE

    parts = re.split(r"(\{chat_history\}|\{question\})", DEFAULT_CONDENSE_PROMPT_TEMPLATE)
    if parts.count("{question}") != 1:  # not the shape this reads: recognise nothing
        return ()
    pattern = "".join({"{chat_history}": "(?s:.*)", "{question}": "(?P<question>(?s:.*))"}.get(p, re.escape(p))
                      for p in parts)
    return (re.compile(pattern),)


def _formatted_question(prompt: str) -> Optional[str]:
    """The question of a prompt formatted from one of :func:`_formatted_templates`, or None."""
    for pattern in _formatted_templates():
        match = pattern.fullmatch(prompt)
        if match is not None and match.group("question").strip():
            return match.group("question")
    return None

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
    A ReAct agent's tool output (:func:`_is_react_observation`) is a tool message, as a
    function-calling agent's is, so that its loop is routed on the user's question.
    """
    _check_messages(messages, "messages")
    pairs: List[Tuple[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise ConfigError(
                f"messages[{i}] must be a llama_index ChatMessage, got {type(message).__name__}"
            )
        role = _ROLES.get(MessageRole(message.role).value, MessageRole(message.role).value)
        if role == "user" and i and _is_react_observation(messages[i - 1], message):
            role = "tool"
        pairs.append((role, message.blocks))
    return pairs


def _is_react_observation(previous: Any, message: ChatMessage) -> bool:
    """LlamaIndex's ``ReActAgent`` sends a tool's output as a user message ``Observation: ...``
    (``ReActChatFormatter``'s default ``observation_role``) after its ``Action:`` step."""
    return (isinstance(previous, ChatMessage) and previous.role == MessageRole.ASSISTANT
            and (message.content or "").startswith("Observation:")
            and re.search(r"(?m)^Action:", previous.content or "") is not None)


def _new_key(llm: "RouteLLM") -> "RouteLLM":
    llm._key = uuid4().hex
    llm._copies = {}  # its own copies of the models (they hold SDK clients)
    return llm


def _same(a: Tuple[Any, ...], b: Tuple[Any, ...]) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # a field whose values do not compare (an array): take it as changed
        return False


def _copy_state(model: LLM, settings: Dict[str, Any], ours: List[Any]) -> Tuple[Any, ...]:
    """What a copy of ``model`` made by :meth:`RouteLLM._model` depends on: the model's
    fields (a dict field by its items, so that a change made in place counts too), the
    prompt settings and the callback handlers given to it."""
    fields = tuple((name, dict(value) if isinstance(value, dict) else value) for name, value in model.__dict__.items())
    return (fields, tuple((name, id(value)) for name, value in settings.items()), tuple(map(id, ours)),
            tuple(map(id, model.callback_manager.handlers)))


def _call_conversation(messages: Sequence[ChatMessage]) -> List[Tuple[str, Any]]:
    """The messages of a call, which needs at least one (as RouteLLMChat's): refused before
    routing, not sent to a model as an empty request."""
    conversation = to_conversation(messages)
    if not conversation:
        raise ConfigError("RouteLLM got an empty list of messages; a call needs at least one message")
    return conversation


def _check_llm(name: str, model: Any) -> None:
    if not isinstance(model, LLM):
        raise ConfigError(f"{name} must be a LlamaIndex LLM, got {type(model).__name__}: {model!r}")


def _check_messages(messages: Any, name: str) -> None:
    """Refuse what is not a sequence of messages (a string, ``None``, an iterator the model
    would then get empty) before anything is called."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, abc.Sequence):
        raise ConfigError(f"{name} must be a list of llama_index ChatMessage, got {type(messages).__name__}: "
                          f"{messages!r:.100}")


def _tools_conversation(
    user_msg: Optional[Union[str, ChatMessage]], chat_history: Optional[Sequence[ChatMessage]]
) -> List[Tuple[str, Any]]:
    """The conversation a ``chat_with_tools`` call sends: the history, then the user message."""
    if chat_history is not None:
        _check_messages(chat_history, "chat_history")
    if not (user_msg is None or isinstance(user_msg, (str, ChatMessage))):
        raise ConfigError(f"user_msg must be a string, a llama_index ChatMessage or None, got "
                          f"{type(user_msg).__name__}: {user_msg!r:.100}")
    messages = list(chat_history or [])
    if isinstance(user_msg, str):
        messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
    elif user_msg is not None:
        messages.append(user_msg)
    return _call_conversation(messages)



class RejectedAnswersEvent(BaseEvent):
    """A ``RouteLLM`` call failed after its escalation checks rejected answers (the model
    it escalated to raised ``error``): those answers were made and paid for, though the
    call returned none. ``escalations`` lists them as a decision record does (``role``,
    ``model``, ``reason``, ``usage``); the :class:`~llamaindex_routellm.LedgerHandler`
    prices them."""

    escalations: List[Dict[str, Any]]
    error: str

    @classmethod
    def class_name(cls) -> str:
        return "RouteLLMRejectedAnswersEvent"


def _report_rejected(error: BaseException, watch: Optional[Watch] = None, lost: Sequence[Any] = ()) -> None:
    """Dispatch a :class:`RejectedAnswersEvent` if ``error`` ended a call after a rejection
    (those it carries, or ``lost``; their usage read from them, or, in a watched call,
    from their attempts)."""
    lost = lost or rejected_answers(error)
    if lost:
        usage = [watch.usage(e.model_id) if watch is not None else _usage(e.value) for e in lost]
        dispatcher.event(RejectedAnswersEvent(escalations=rejected_records(lost, usage),
                                              error=f"{type(error).__name__}: {error}"))


def _usage(answer: Any) -> Optional[dict[str, Any]]:
    """Token usage of a rejected answer (a response, or a buffered stream's chunks), for its record."""
    from llamaindex_routellm.ledger import response_usage

    if isinstance(answer, (list, tuple)):
        answer = answer[-1] if answer else None
    n_in, n_out = response_usage(answer)
    return None if n_in is None or n_out is None else {"input_tokens": n_in, "output_tokens": n_out}


class RouteLLM(RoutedModel, FunctionCallingLLM):
    """A LlamaIndex LLM that routes every call to a strong or a weak LLM.

    The router scores the last user message (in a RAG query engine: the user's
    question, ``query_str``, not the prompt stuffed with retrieved text; in the
    condense step of a ``condense_question`` chat engine: the follow-up ``question``,
    not the chat history) and the
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
        escalate_on: checks on the weak model's answer (``"empty"``, ``"refusal"``,
            ``"length"``, ``"tool_calls"``, ``"structured"``, or a predicate
            ``view -> bool``) that send the same call to the strong model;
            recorded in ``additional_kwargs["routellm"]["escalations"]``; a weak
            stream is buffered while checked (``docs/escalation.md``).
        route_on: ``"last_user"`` (default) or ``"last_turn"`` (the previous turn too).
        pin_threads: pin a conversation to the model its first call went to
            (``llm.chat(messages, thread_id="t1")``), unless an answer escalates;
            this many threads are remembered. 0 (default): off.
        ladder: instead of ``strong``/``weak``, ``(llm, name, threshold)`` rungs
            cheapest first, for a multi-model router (``irt``; :mod:`shared_core.ladder`).

    These settings are :class:`shared_core.settings.RoutingSettings`, shared with
    the LangChain wrappers; setting one later (``llm.threshold = 0.7``) takes
    effect. Unknown keyword arguments are refused. The models' own
    ``callback_manager`` is left alone: a callback manager given to this LLM (a
    query engine hands it one) sees the chosen model's calls as well.
    LlamaIndex's prompt settings of an LLM (``system_prompt``, ``query_wrapper_prompt``,
    ``messages_to_prompt``, ``completion_to_prompt``, ``output_parser``,
    ``pydantic_program_mode``, ``rate_limiter``) set on this LLM apply to each call as if
    set on the chosen model (which otherwise keeps its own).

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

    Escalate an answer that fails a check, and pin a conversation to its model:
        >>> picky = RouteLLM(strong=MockLLM(), weak=MockLLM(), router="random", threshold=0.5,
        ...                  escalate_on=[lambda view: "hi" in view.text], pin_threads=100)
        >>> record = picky.complete("Say hi", thread_id="t1").additional_kwargs["routellm"]
        >>> record["role"], record["escalated"]["from"]
        ('strong', 'weak')
        >>> picky.complete("Thanks", thread_id="t1").additional_kwargs["routellm"]["reason"]
        'pinned'

    In a query engine (``index.as_query_engine(llm=llm)``) the decision is made
    on the question; read it from :attr:`last_decision` (a
    :class:`~llamaindex_routellm.LedgerHandler` records these calls too, from the
    :class:`~llamaindex_routellm.RoutedCallEvent` each ends with while one is
    attached). Tool calling
    (``chat_with_tools``, ``FunctionAgent``) works when both models are
    function-calling LLMs; the chosen model formats the tools and parses its calls.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    strong: LLM = Field(description="LLM for the calls the router sends to the strong model.")
    weak: LLM = Field(description="LLM for the calls the router sends to the weak model.")

    _key: str = PrivateAttr(default_factory=lambda: uuid4().hex)
    #: The copy :meth:`_model` gave each model, with what it was made from (see :func:`_copy_state`).
    _copies: Dict[int, Tuple[LLM, Tuple[Any, ...], LLM]] = PrivateAttr(default_factory=dict)

    def __init__(self, strong: Optional[LLM] = None, weak: Optional[LLM] = None, **kwargs: Any) -> None:
        strong, weak = ladder_ends(strong, weak, kwargs, _check_llm)
        super().__init__(strong=strong, weak=weak, **kwargs)
        # The context it is made in holds the decisions of calls made in contexts copied from it.
        _own_decisions()

    def __setattr__(self, name: str, value: Any) -> None:
        # A model set later is checked as at construction, not at the first call.
        if name in ("strong", "weak"):
            _check_llm(name, value)
        elif name == "ladder" and value is not None:
            ladder_ends(None, None, {"ladder": value}, _check_llm)
        super().__setattr__(name, value)

    # A copy (``model_copy``, ``copy``, ``deepcopy``, a pickle) is another LLM: its own
    # key, so that each reports its own :attr:`last_decision`.
    def __copy__(self) -> "RouteLLM":
        return _new_key(super().__copy__())

    def __deepcopy__(self, memo: Optional[Dict[int, Any]] = None) -> "RouteLLM":
        copies, self._copies = self._copies, {}  # not copied: they hold SDK clients
        try:
            return _new_key(super().__deepcopy__(memo))
        finally:
            self._copies = copies

    def __getstate__(self) -> Dict[Any, Any]:
        state = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private and private.get("_copies"):  # not pickled: they hold SDK clients
            state = {**state, "__pydantic_private__": {**private, "_copies": {}}}
        return state

    def __setstate__(self, state: Dict[Any, Any]) -> None:
        super().__setstate__(state)
        _new_key(self)

    @classmethod
    def class_name(cls) -> str:
        return "RouteLLM"

    @field_serializer("router", "controller", "fallback_on", "escalate_on")
    def _dump_setting(self, value: Any) -> Any:
        """A setting that is an object (a Router, a controller, exception types, a predicate,
        a check) written as a description, so that ``to_json`` works: a router as its name,
        a controller as its state."""
        return _describe(value)

    @field_serializer("ladder")
    def _dump_ladder(self, ladder: Optional[List[Any]], info: Any) -> Optional[List[Any]]:
        """Each rung's model written as ``strong`` and ``weak`` are, so that ``to_dict`` /
        ``to_json`` carry no API key or endpoint of a rung."""
        if ladder is None:
            return None
        return [(_AS_LLM.dump_python(model, mode=info.mode), name, threshold) for model, name, threshold in ladder]

    @property
    def metadata(self) -> LLMMetadata:
        """What holds for every model (both, or each rung): the smallest context
        window, the largest output reservation, chat and function calling only if
        all have them."""
        models = [m for _, m in self._members()]
        meta = [m.metadata for m in models]
        roles = {m.system_role for m in meta}
        return LLMMetadata(
            context_window=min(m.context_window for m in meta),
            num_output=max(m.num_output for m in meta),
            is_chat_model=all(m.is_chat_model for m in meta),
            is_function_calling_model=all(
                m.is_function_calling_model and isinstance(model, FunctionCallingLLM) for m, model in zip(meta, models)
            ),
            model_name=f"routellm[{self.engine.router.label}]({'|'.join(m.model_name for m in meta)})",
            system_role=roles.pop() if len(roles) == 1 else MessageRole.SYSTEM,
        )

    # Routing -----------------------------------------------------------------
    @property
    def last_decision(self) -> Optional[Decision]:
        """The router's decision for the last call made in the current context
        (thread or asyncio task) or in a context copied from it: an asyncio task it
        started, or the thread in which a LlamaIndex streaming chat engine (``context``,
        ``condense_question``, ``condense_plus_context``) makes the model call. Concurrent
        tasks each read their own; a thread started without a copy of the context (a
        plain ``threading.Thread``, a thread pool) is a context of its own. The one place
        to read it for calls that return plain text (``predict``, ``stream``, a query
        engine's answer), whose full record a ``LedgerHandler`` gets in a
        ``RoutedCallEvent``."""
        holder = _LAST_DECISIONS.get()
        return None if holder is None else holder.latest.get(self._key)

    def route(self, prompt: Union[str, Sequence[ChatMessage]]) -> Decision:
        """Decide for a question or a conversation without calling a model (a controller
        previews it: nothing is counted or reserved for it)."""
        if isinstance(prompt, str):
            return self.engine.decide_one([("user", prompt)], observe=False)
        if not isinstance(prompt, abc.Sequence):
            raise ConfigError(f"prompt must be a string or a list of llama_index ChatMessage, got "
                              f"{type(prompt).__name__}: {prompt!r:.100}")
        return self.engine.decide_one(_call_conversation(prompt), observe=False)

    def _remember(self, decision: Decision) -> Decision:
        _own_decisions().record(self._key, decision)
        return decision

    def _decide(self, conversation: List[Tuple[str, Any]], thread: Any = None) -> Decision:
        pinned = self._pinned(thread)
        return self._remember(pinned if pinned is not None else self.engine.decide_one(conversation))

    async def _adecide(self, conversation: List[Tuple[str, Any]], thread: Any = None) -> Decision:
        pinned = self._pinned(thread)
        if pinned is not None:
            return self._remember(pinned)
        # The router may run a model (embeddings); keep it off the event loop.
        return self._remember(await asyncio.to_thread(self.engine.decide_one, conversation))

    def _model(self, key: Any) -> LLM:
        """The model for ``key`` (a role, or a ladder's rung), seeing this LLM's
        callback manager too and given the prompt settings set on this LLM
        (:data:`_PROMPT_SETTINGS`; a copy of the model when it must: the user's
        model is not changed)."""
        return self._prepared(self._member(key))

    def _prepared(self, model: LLM) -> LLM:
        """:meth:`_model` for the model itself."""
        settings = {name: getattr(self, name) for name, default in _PROMPT_SETTINGS.items()
                    if getattr(self, name) is not default}
        usage = _asking_stream_usage(model)
        ours = [h for h in self.callback_manager.handlers if h not in model.callback_manager.handlers]
        if not (settings or usage or ours):
            return model
        # One copy while neither the model nor what it is given changes: a copy per call
        # would also give each call a new SDK client (LlamaIndex's OpenAI LLM keeps its
        # client, and so its open connections, on the instance).
        state = _copy_state(model, settings, ours)
        cached = self._copies.get(id(model))
        if cached is not None and cached[0] is model and _same(cached[1], state):
            return cached[2]
        update = {**settings, **usage}
        if ours:
            update["callback_manager"] = CallbackManager(handlers=[*model.callback_manager.handlers, *ours])
        copy = model.model_copy(update=update)
        self._copies[id(model)] = (model, state, copy)
        return copy

    def _plan(
        self, decision: Decision, tools: bool, timeout: Optional[float] = None, view: Any = None,
        context: Optional[CallContext] = None,
    ) -> Attempts[LLM]:
        """The attempt loop: the chosen model, then the other with ``fallback``
        (and, with ``escalate_on``, the strong model for a rejected weak answer)."""
        attempts = self._attempts(decision, self._model, timeout=timeout, view=view, context=context)
        if tools:
            for role, model in (*attempts.plan, *attempts.escalate_to):
                if not isinstance(model, FunctionCallingLLM):
                    raise ConfigError(
                        f"tool calling needs both models to be function-calling LLMs; the {role.value} model "
                        f"{type(model).__name__} is not a FunctionCallingLLM"
                    )
        return attempts

    def _finish(self, decision: Decision, attempts: Attempts[Any], outcome: Outcome[Any], tag: bool,
                thread: Any, watch: Optional[Watch] = None) -> Any:
        self._pin(thread, decision, attempts, outcome)
        value = outcome.value
        if isinstance(value, _ParseFailure):
            # The last model's structured output did not parse either: the call raises its
            # error, after the rejected answers before it, paid for, are reported.
            _report_rejected(value.error, watch, outcome.escalations)
            raise value.error
        if watch is not None:
            watch.finish(self._record(decision, attempts, outcome), outcome)
        return _tag(value, self._record(decision, attempts, outcome, _usage)) if tag else value

    def _call(
        self, decision: Decision, call: Callable[[Any], Any], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None, thread: Any = None, context: Optional[CallContext] = None,
        view: Callable[[Any], AnswerView] = None,
    ) -> Any:
        attempts, watch = self._plan(decision, tools, timeout, view or _response_view, context), watch_for(tag)
        try:
            outcome = attempts.run(call if watch is None else watch.call(call))
        except BaseException as exc:
            _report_rejected(exc, watch)
            raise
        return self._finish(decision, attempts, outcome, tag, thread, watch)

    async def _acall(
        self, decision: Decision, call: Callable[[Any], Awaitable[Any]], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None, thread: Any = None, context: Optional[CallContext] = None,
        view: Callable[[Any], AnswerView] = None,
    ) -> Any:
        attempts, watch = self._plan(decision, tools, timeout, view or _response_view, context), watch_for(tag)
        try:
            outcome = await attempts.arun(call if watch is None else watch.acall(call))
        except BaseException as exc:
            _report_rejected(exc, watch)
            raise
        return self._finish(decision, attempts, outcome, tag, thread, watch)

    def _stream(
        self, decision: Decision, call: Callable[[Any], Iterator[Any]], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None, thread: Any = None, context: Optional[CallContext] = None,
        bound: Optional[Bound] = None,
    ) -> Generator[Any, None, None]:
        # The chosen model's call starts now, as a direct call would (eager); a
        # fallback happens only if the error comes before the first chunk.
        attempts, watch = self._plan(decision, tools, timeout, _chunks_view, context), watch_for(tag)
        call = self._stream_asking_usage(call)
        chunks = attempts.stream(call if watch is None else watch.stream(call), eager=True)

        def tagged() -> Generator[Any, None, None]:
            mark = self._marker(decision, attempts, chunks, tag, thread)
            usage = None
            try:
                for chunk in chunks:
                    usage = _usage(chunk) or usage
                    yield mark(chunk)
            except GeneratorExit:  # the caller left (at a yield: after a chunk): no ledger sees this answer end
                _leave_stream(attempts, chunks.outcome, bound, usage)
                raise
            except BaseException as exc:
                _report_rejected(exc, watch)
                raise
            if watch is not None:  # the stream ended: its usage is in
                watch.finish(self._record(decision, attempts, chunks.outcome), chunks.outcome)

        return tagged()

    async def _astream(
        self, decision: Decision, call: Callable[[Any], Awaitable[Any]], tag: bool = True, tools: bool = False,
        timeout: Optional[float] = None, thread: Any = None, context: Optional[CallContext] = None,
        bound: Optional[Bound] = None,
    ) -> AsyncGenerator[Any, None]:
        attempts, watch = self._plan(decision, tools, timeout, _chunks_view, context), watch_for(tag)
        call = self._astream_asking_usage(call)
        chunks = await attempts.astream(call if watch is None else watch.astream(call)).open_first()

        async def tagged() -> AsyncGenerator[Any, None]:
            mark = self._marker(decision, attempts, chunks, tag, thread)
            usage, started = None, False
            try:
                async for chunk in chunks:
                    started, usage = True, _usage(chunk) or usage
                    yield mark(chunk)
            except (GeneratorExit, asyncio.CancelledError):  # the caller left (closed, or cancelled it)
                if started:
                    _leave_stream(attempts, chunks.outcome, bound, usage)
                raise
            except BaseException as exc:
                _report_rejected(exc, watch)
                raise
            if watch is not None:
                watch.finish(self._record(decision, attempts, chunks.outcome), chunks.outcome)

        return tagged()

    def _asked_for_usage(self, model: LLM) -> Optional[LLM]:
        """The model ``model`` is the copy of if that copy asks for stream usage, else None."""
        for original, _, copy in list(self._copies.values()):
            if copy is model and _asking_stream_usage(original):
                return original
        return None

    def _refused_usage(self, original: LLM, exc: BaseException) -> bool:
        """Whether ``exc`` is the endpoint's refusal of ``stream_options``; if so, ``original``
        is asked no more (its copy is dropped)."""
        if not refuses_stream_options(getattr(exc, "status_code", None), exc):
            return False
        _REFUSED_STREAM_USAGE.add(original)
        self._copies.pop(id(original), None)
        return True

    def _stream_asking_usage(self, call: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Iterator[Any]]:
        """``call`` for a stream; if the chosen model's copy asks for its usage and the endpoint
        refuses that (when called, or before the first chunk), the stream again from a copy
        that does not ask."""
        def run(model: LLM) -> Iterator[Any]:
            original = self._asked_for_usage(model)
            if original is None:
                return call(model)
            refused = partial(self._refused_usage, original)
            try:
                chunks = call(model)
            except Exception as exc:  # noqa: BLE001 - only a refusal of the field is retried; the rest re-raised
                if not refused(exc):
                    raise
                return call(self._prepared(original))
            return retried_stream(chunks, lambda: call(self._prepared(original)), refused)

        return run

    def _astream_asking_usage(self, call: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """:meth:`_stream_asking_usage` for an async stream (``call`` returns an awaitable of one)."""
        async def run(model: LLM) -> Any:
            original = self._asked_for_usage(model)
            if original is None:
                return await call(model)
            refused = partial(self._refused_usage, original)
            try:
                chunks = await call(model)
            except Exception as exc:  # noqa: BLE001 - only a refusal of the field is retried; the rest re-raised
                if not refused(exc):
                    raise
                return await call(self._prepared(original))
            return aretried_stream(chunks, lambda: call(self._prepared(original)), refused)

        return run

    def _marker(self, decision: Decision, attempts: Attempts[Any], chunks: Any, tag: bool,
                thread: Any) -> Callable[[Any], Any]:
        """What a stream does to each chunk: at the first, pin the thread and make the
        record (the outcome is known by then); tag every chunk with it if ``tag`` (a
        plain-text stream makes no record: its chunks carry none)."""
        record: Optional[dict[str, Any]] = None
        pinned = False

        def mark(chunk: Any) -> Any:
            nonlocal record, pinned
            if not pinned:
                self._pin(thread, decision, attempts, chunks.outcome)
                pinned = True
                if tag:
                    record = self._record(decision, attempts, chunks.outcome, _usage)
            return _tag(chunk, record) if tag else chunk

        return mark

    # Chat and completion -----------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = self._decide(_call_conversation(messages), thread)
        return self._call(decision, lambda m: m.chat(messages, **kwargs), timeout=timeout, thread=thread)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = self._decide(_call_conversation(messages), thread)
        return self._stream(decision, lambda m: m.stream_chat(messages, **kwargs), timeout=timeout, thread=thread,
                            bound=lambda m: _token_bounds(m, messages, kwargs))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = await self._adecide(_call_conversation(messages), thread)
        return await self._acall(decision, lambda m: m.achat(messages, **kwargs), timeout=timeout, thread=thread)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = await self._adecide(_call_conversation(messages), thread)
        return await self._astream(decision, lambda m: m.astream_chat(messages, **kwargs), timeout=timeout,
                                   thread=thread, bound=lambda m: _token_bounds(m, messages, kwargs))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = self._decide(_prompt_conversation(prompt), thread)
        return self._call(decision, lambda m: m.complete(prompt, formatted=formatted, **kwargs), timeout=timeout,
                          thread=thread)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = self._decide(_prompt_conversation(prompt), thread)
        return self._stream(decision, lambda m: m.stream_complete(prompt, formatted=formatted, **kwargs),
                            timeout=timeout, thread=thread, bound=lambda m: _token_bounds(m, prompt, kwargs))

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = await self._adecide(_prompt_conversation(prompt), thread)
        return await self._acall(decision, lambda m: m.acomplete(prompt, formatted=formatted, **kwargs),
                                 timeout=timeout, thread=thread)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        timeout, thread = pop_timeout(kwargs), _pop_thread(kwargs)
        decision = await self._adecide(_prompt_conversation(prompt), thread)
        return await self._astream(decision, lambda m: m.astream_complete(prompt, formatted=formatted, **kwargs),
                                   timeout=timeout, thread=thread, bound=lambda m: _token_bounds(m, prompt, kwargs))

    # Prompt templates (query engines): route on query_str, the chosen model formats
    def _template_conversation(
        self, prompt: BasePromptTemplate, prompt_args: Dict[str, Any]
    ) -> List[Tuple[str, Any]]:
        """The user's question in a template (:data:`_QUESTION_VARS`) if it has one, else the
        formatted messages."""
        if not isinstance(prompt, BasePromptTemplate):
            raise ConfigError(f"prompt must be a llama_index prompt template (PromptTemplate('...')), got "
                              f"{type(prompt).__name__}: {prompt!r:.100}")
        values = ChainMap(prompt_args, getattr(prompt, "kwargs", {}) or {})
        for name in _QUESTION_VARS:
            if isinstance(values.get(name), str):
                return [("user", values[name])]
        return to_conversation(prompt.format_messages(llm=self, **prompt_args))

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        return self._call(decision, lambda m: m.predict(prompt, **prompt_args), tag=False)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> Generator[str, None, None]:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        return self._stream(decision, lambda m: m.stream(prompt, **prompt_args), tag=False,
                            bound=_template_bound(prompt, prompt_args))

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        return await self._acall(decision, lambda m: m.apredict(prompt, **prompt_args), tag=False)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> AsyncGenerator[str, None]:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        return await self._astream(decision, lambda m: m.astream(prompt, **prompt_args), tag=False,
                                   bound=_template_bound(prompt, prompt_args))

    def structured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        decision = self._decide(self._template_conversation(prompt, prompt_args))
        catch = self.escalate_on is not None
        return self._call(
            decision,
            lambda m: _parsed(lambda: m.structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args),
                              catch),
            tag=False, view=_structured_view,
        )

    async def astructured_predict(
        self, output_cls: Any, prompt: BasePromptTemplate, llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Any:
        decision = await self._adecide(self._template_conversation(prompt, prompt_args))
        catch = self.escalate_on is not None
        return await self._acall(
            decision,
            lambda m: _aparsed(m.astructured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args), catch),
            tag=False, view=_structured_view,
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
    @dispatcher.span
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
        thread = _pop_thread(args)
        decision = self._decide(_tools_conversation(user_msg, chat_history), thread)
        return self._call(decision, lambda m: m.chat_with_tools(tools, **args), tools=True, timeout=timeout,
                          thread=thread, context=_tools_context(tools, tool_required))

    @dispatcher.span
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
        thread = _pop_thread(args)
        decision = await self._adecide(_tools_conversation(user_msg, chat_history), thread)
        return await self._acall(decision, lambda m: m.achat_with_tools(tools, **args), tools=True, timeout=timeout,
                                 thread=thread, context=_tools_context(tools, tool_required))

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
        thread = _pop_thread(args)
        decision = self._decide(_tools_conversation(user_msg, chat_history), thread)
        return self._stream(decision, lambda m: m.stream_chat_with_tools(tools, **args), tools=True, timeout=timeout,
                            thread=thread, context=_tools_context(tools, tool_required), bound=_tools_bound(tools, args))

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
        thread = _pop_thread(args)
        decision = await self._adecide(_tools_conversation(user_msg, chat_history), thread)
        return await self._astream(decision, lambda m: m.astream_chat_with_tools(tools, **args), tools=True,
                                   timeout=timeout, thread=thread, context=_tools_context(tools, tool_required),
                                   bound=_tools_bound(tools, args))

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
        # ``chat(**prepared)`` to that same model, which makes the decision (a controller
        # previews this one: nothing is counted or reserved for it).
        args = _tool_args(user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs)
        conversation = _tools_conversation(user_msg, chat_history)
        decision = self._pinned(_pop_thread(args)) or self.engine.decide_one(conversation, observe=False)
        model = self._plan(decision, tools=True).plan[0][1]
        return model._prepare_chat_with_tools_compat(tools, **args)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> List[ToolSelection]:
        """Parse tool calls with the model that wrote ``response`` (read from its
        decision record; a response without one, such as an agent's empty
        placeholder, is parsed by the strong model)."""
        record = response.additional_kwargs.get(DECISION_KEY) or {}
        if self.ladder is not None and isinstance(record.get("answered_rung"), int):
            model = self._member(record["answered_rung"])
        else:
            model = self.weak if record.get("role") == Role.WEAK.value else self.strong
        if not isinstance(model, FunctionCallingLLM):
            raise ConfigError(f"the model {type(model).__name__} that wrote this response cannot call tools")
        return model.get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)


def _describe(value: Any) -> Any:
    """``value`` as plain JSON data: itself when it is, else a description of it."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Router):
        return value.label  # the shipped or trained name it answers to (the default: adaptive_ensemble_l3)
    if isinstance(value, Controller):
        return value.to_state()
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return getattr(value, "__qualname__", None) or type(value).__name__


def _pop_thread(kwargs: Dict[str, Any]) -> Any:
    """Take the caller's ``thread_id`` (for ``pin_threads``) out of call keyword arguments;
    checked where it pins, so only when ``pin_threads`` is on (as the LangChain wrappers do)."""
    return kwargs.pop("thread_id", None)


# Escalation: responses as the checks see them ------------------------------------------
def _response_view(response: Any) -> AnswerView:
    """A ChatResponse or CompletionResponse (or a plain value, as ``predict`` returns)."""
    if isinstance(response, ChatResponse):
        message = response.message
        calls = [ToolCall(getattr(b, "tool_name", ""), getattr(b, "tool_kwargs", None))
                 for b in message.blocks if getattr(b, "block_type", None) == "tool_call"]
        for call in message.additional_kwargs.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else getattr(call, "function", None)
            name = function.get("name") if isinstance(function, dict) else getattr(function, "name", "")
            raw = function.get("arguments") if isinstance(function, dict) else getattr(function, "arguments", None)
            try:
                args = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                args = raw  # the model's arguments are not JSON: the tool_calls check says so
            calls.append(ToolCall(name or "", args))
        return AnswerView(text=content_text(message.blocks), tool_calls=tuple(calls),
                          finish_reason=_finish_reason(response), raw=response)
    if isinstance(response, CompletionResponse):
        return AnswerView(text=response.text or "", finish_reason=_finish_reason(response), raw=response)
    if isinstance(response, str):
        return AnswerView(text=response, raw=response)
    return AnswerView(text=None, raw=response)


def _chunks_view(chunks: List[Any]) -> AnswerView:
    """A buffered stream: its last chunk holds the whole answer (LlamaIndex chunks are cumulative)."""
    if not chunks:
        return AnswerView(text="")
    last = chunks[-1]
    if isinstance(last, str):  # ``stream(prompt)`` yields text deltas
        return AnswerView(text="".join(chunks), raw=chunks)
    return _response_view(last)


def _finish_reason(response: Any) -> Optional[str]:
    """The provider's finish reason, where LlamaIndex keeps it: ``raw`` (OpenAI's
    ``choices[0].finish_reason``, Anthropic's ``stop_reason``) or ``additional_kwargs``."""
    raw = getattr(response, "raw", None)
    candidates = [(response.additional_kwargs or {}).get("finish_reason")]
    if isinstance(raw, dict):
        choices = raw.get("choices") or [{}]
        candidates += [raw.get("finish_reason"), raw.get("stop_reason"),
                       choices[0].get("finish_reason") if isinstance(choices[0], dict) else None]
    elif raw is not None:
        choices = getattr(raw, "choices", None) or [None]
        candidates += [getattr(raw, "stop_reason", None), getattr(choices[0], "finish_reason", None)]
    return next((c for c in candidates if isinstance(c, str)), None)


@dataclass(frozen=True)
class _ParseFailure:
    """A model's structured output that did not parse (kept to escalate, raised if it is the last)."""

    error: BaseException


#: What a structured output that does not parse raises (pydantic's ValidationError is a ValueError).
_PARSE_ERRORS = (ValueError, TypeError)


def _parsed(call: Callable[[], Any], catch: bool) -> Any:
    if not catch:
        return call()
    try:
        return call()
    except _PARSE_ERRORS as exc:
        return _ParseFailure(exc)


async def _aparsed(awaitable: Awaitable[Any], catch: bool) -> Any:
    if not catch:
        return await awaitable
    try:
        return await awaitable
    except _PARSE_ERRORS as exc:
        return _ParseFailure(exc)


def _structured_view(value: Any) -> AnswerView:
    if isinstance(value, _ParseFailure):
        return AnswerView(text=None, parse_error=value.error)
    return AnswerView(text=None, parsed=value, raw=value)


def _tools_context(tools: Sequence["BaseTool"], tool_required: bool) -> CallContext:
    schemas = {t.metadata.name: t.metadata.get_parameters_dict() for t in tools if t.metadata.name}
    return CallContext(tools=schemas, tool_required=tool_required)


#: The models whose endpoint refused ``stream_options``: asked no more (:meth:`RouteLLM._refused_usage`).
_REFUSED_STREAM_USAGE = Refusals()


@lru_cache(maxsize=1)
def _openai_llm() -> Optional[type]:
    try:
        from llama_index.llms.openai import OpenAI
    except ImportError:  # llama-index-llms-openai is optional
        return None
    return OpenAI


def _asking_stream_usage(model: LLM) -> Dict[str, Any]:
    """The update that makes LlamaIndex's OpenAI LLM (and OpenAILike) report a stream's
    usage: ``stream_options.include_usage`` in its ``additional_kwargs``, which it sends
    with streamed requests only. Without it a stream has no usage, so a ``LedgerHandler``
    cannot price it and a budget is not charged. Nothing if the model sets
    ``stream_options`` itself (``{"include_usage": False}`` for an endpoint that refuses it)."""
    openai = _openai_llm()
    if openai is None or not isinstance(model, openai) or "stream_options" in (model.additional_kwargs or {}):
        return {}
    if model in _REFUSED_STREAM_USAGE:  # its endpoint refused the field
        return {}
    return {"additional_kwargs": {**(model.additional_kwargs or {}), "stream_options": {"include_usage": True}}}


def _prompt_conversation(prompt: str) -> List[Tuple[str, Any]]:
    """What a completion call routes on: its prompt, or the user's question in a prompt
    LlamaIndex formatted from a known template (:func:`_formatted_question`)."""
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}: {prompt!r}")
    question = _formatted_question(prompt)
    return [("user", prompt if question is None else question)]


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


# Budgets: a strong stream the caller left ----------------------------------------------
#: Content block types whose bytes bound their tokens (text); any other (an image, audio, a
#: document) leaves a prompt without a bound.
_TEXT_BLOCKS = frozenset({"text", "thinking", "tool_call"})

#: What a stream's bound is read from: the chosen model gives ``(prompt tokens, completion tokens)`` or ``None``.
Bound = Callable[[Any], Optional[Tuple[int, int]]]


def _token_bounds(model: Any, prompt: Union[str, Sequence[ChatMessage]], kwargs: Dict[str, Any],
                  tools: Sequence[Any] = ()) -> Optional[Tuple[int, int]]:
    """Upper bounds on the prompt and completion tokens of ``model``'s call, or ``None``
    where there is none: the prompt (a string, or messages as JSON), the model's system
    prompt, the call keywords, its ``additional_kwargs`` and the tools' schemas
    (:func:`~shared_core.ledger.prompt_token_bound`; text only), and the max tokens of
    the call, else of ``additional_kwargs``, else the model's ``max_tokens``, times ``n``."""
    extra = getattr(model, "additional_kwargs", None) or {}
    limit = next((v for v in (kwargs.get("max_completion_tokens"), kwargs.get("max_tokens"),
                              extra.get("max_completion_tokens"), extra.get("max_tokens"),
                              getattr(model, "max_tokens", None)) if v is not None), None)
    completion = completion_token_bound(limit, kwargs.get("n", extra.get("n")))
    if completion is None:
        return None
    if isinstance(prompt, str):
        texts, count = [prompt], 1
    else:
        if not all(getattr(b, "block_type", None) in _TEXT_BLOCKS for m in prompt for b in m.blocks):
            return None
        texts = [json.dumps(m.model_dump(), default=str, ensure_ascii=False) for m in prompt]
        count = len(prompt)
    texts += [getattr(model, "system_prompt", None) or "", json.dumps(kwargs, default=str, ensure_ascii=False),
              json.dumps(extra, default=str, ensure_ascii=False)]
    texts += [json.dumps(t.metadata.to_openai_tool(), default=str, ensure_ascii=False) for t in tools]
    return prompt_token_bound(texts, count), completion


def _tools_bound(tools: Sequence[Any], args: Dict[str, Any]) -> Bound:
    """The bound of a ``stream_chat_with_tools`` call (its history, its user message, its tools)."""
    user_msg = args.get("user_msg")
    messages = list(args.get("chat_history") or [])
    if user_msg is not None:
        messages.append(ChatMessage(role="user", content=user_msg) if isinstance(user_msg, str) else user_msg)
    rest = {k: v for k, v in args.items() if k not in ("user_msg", "chat_history")}
    return lambda model: _token_bounds(model, messages, rest, tools)


def _template_bound(prompt: BasePromptTemplate, prompt_args: Dict[str, Any]) -> Bound:
    """The bound of a prompt template's stream (a query engine's answer): the template as
    the chosen model formats it."""
    def bound(model: Any) -> Optional[Tuple[int, int]]:
        try:
            text = prompt.format(llm=model, **prompt_args)
        except Exception:  # noqa: BLE001 - the model's own call formatted it; if this cannot, no bound
            return None
        return _token_bounds(model, text, {})

    return bound


def _leave_stream(attempts: Attempts[Any], outcome: Optional[Outcome[Any]], bound: Optional[Bound],
                  usage: Optional[Dict[str, Any]]) -> None:
    """A stream the caller left (closed, cancelled) after its first chunk: if the strong
    model was answering under a budget, charge it (:meth:`~shared_core.controller.
    Reservations.leave_answer`) at its usage if it came, else at its bounds; with no bound (no
    max tokens, an image, a structured stream), the reserve, or with none the period
    (:meth:`~shared_core.controller.BudgetController.charge_unbounded`), with a warning."""
    spend = getattr(attempts, "spend", None)
    if spend is None:
        return
    counts = (0, 0) if usage is None else (usage["input_tokens"], usage["output_tokens"])
    spend.leave_answer(outcome, counts, lambda: None if bound is None else bound(outcome.model))
