"""``LedgerCallbackHandler``: the savings ledger for LangChain runs of ``RouteLLMChat``.

Pass it as a callback (``llm.invoke(..., config={"callbacks": [handler]})``, or
``RouteLLMChat(..., callbacks=[handler])``). At the end of each chat-model run
it reads the decision from the answer's ``response_metadata["routellm"]`` and
the tokens from its ``usage_metadata``, and records the call in a
:class:`shared_core.ledger.Ledger` (prices, counterfactual strong cost, totals:
see that module). Runs without a decision record (another model in the same
chain) are counted in :attr:`LedgerCallbackHandler.unrouted`, not priced. The
runs ``RouteLLMChat`` reports for answers its escalation checks rejected (run
metadata ``routellm.rejected``) are not calls of their own: the answer's record
prices them, or, when the call then failed and nothing answered (``unanswered``),
they are priced here with :meth:`~shared_core.ledger.Ledger.record_unanswered`. A
routed answer without usage, or a model without a price, raises (the handler
sets ``raise_error``, so LangChain does not swallow it).

Example:
    >>> from langchain_routellm import LedgerCallbackHandler, RouteLLMChat
    >>> from langchain_routellm.testing import FakeToolChatModel
    >>> llm = RouteLLMChat(strong=FakeToolChatModel(model_name="big"), weak=FakeToolChatModel(model_name="small"),
    ...                    router="random", threshold=0.5)
    >>> handler = LedgerCallbackHandler(prices={"big": (10.0, 30.0), "small": (0.5, 1.5)}, strong_model="big")
    >>> _ = llm.invoke("Prove that there are infinitely many primes.", config={"callbacks": [handler]})
    >>> handler.ledger.summary()
    '1 calls, 0 strong (0.0%), cost $0.000016 vs $0.000320 all-strong, saved $0.000304 (95.0%)'
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Optional
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from langchain_routellm._routing import DECISION_KEY
from shared_core.ledger import CallRecord, Ledger, PriceTable, ledger_from

__all__ = ["LedgerCallbackHandler"]


class LedgerCallbackHandler(BaseCallbackHandler):
    """Records every routed chat-model call in a :class:`~shared_core.ledger.Ledger`.

    Give either ``ledger`` or ``prices`` (dollars per million input/output tokens
    by model name, as the models report it in the decision record) and
    ``strong_model``. Thread- and async-safe: the ledger locks.
    """

    raise_error = True  # a missing price or usage must reach the caller

    def __init__(self, ledger: Optional[Ledger] = None, *, prices: PriceTable | Mapping[str, Any] | None = None,
                 strong_model: Optional[str] = None, budget: Any = None) -> None:
        self.ledger = ledger_from(ledger, prices, strong_model, budget, "LedgerCallbackHandler")
        self._lock = threading.Lock()
        self.unrouted = 0
        self._rejected: dict[UUID, dict[str, Any]] = {}  # runs of rejected answers, by run id, until they end

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID,
                            metadata: Optional[dict[str, Any]] = None, **kwargs: Any) -> None:
        mark = (metadata or {}).get(DECISION_KEY)
        if isinstance(mark, Mapping) and mark.get("rejected"):
            with self._lock:
                self._rejected[run_id] = dict(mark)

    def on_llm_end(self, response: LLMResult, *, run_id: Optional[UUID] = None, **kwargs: Any) -> None:
        with self._lock:
            rejected = self._rejected.pop(run_id, None) if run_id is not None else None
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                if rejected is None:
                    self._record(message)
                elif rejected.get("unanswered"):  # nothing answered: no record prices it but this
                    usage = getattr(message, "usage_metadata", None)
                    self.ledger.record_unanswered([{**rejected, "usage": usage}])

    def on_llm_error(self, error: BaseException, *, run_id: Optional[UUID] = None, **kwargs: Any) -> None:
        with self._lock:
            self._rejected.pop(run_id, None)

    def _record(self, message: Any) -> Optional[CallRecord]:
        record = (getattr(message, "response_metadata", None) or {}).get(DECISION_KEY)
        if not isinstance(record, Mapping):
            with self._lock:
                self.unrouted += 1
            return None
        usage = getattr(message, "usage_metadata", None) or {}
        return self.ledger.record_decision(record, usage.get("input_tokens"), usage.get("output_tokens"))
