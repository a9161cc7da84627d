"""The savings ledger: what routed calls cost, and what they would have cost on the strong model.

A :class:`PriceTable` holds the user's prices (dollars per million input and per
million output tokens, by model name). A :class:`Ledger` records each routed
call (the role and model that answered, its input and output tokens, the
router's score and reason) and prices it twice:

* ``cost``: the call's tokens at the answering model's prices;
* ``strong_cost``: the counterfactual, the same call sent to the strong model.
  It is priced on **the same tokens**: the input tokens the answering model
  reported (the same prompt; tokenizers differ a little between models, which
  this ignores) and **the same number of output tokens** (a strong model's answer
  is assumed to be as long as the answer that was given; nothing better is known
  without calling it).

Totals, the strong share (calls the strong model answered / all calls), the
savings (``strong_cost - cost``) and their share come from :meth:`Ledger.totals`,
everything from :meth:`Ledger.to_dict` / :meth:`Ledger.to_json`, one line from
:meth:`Ledger.summary`. A model with no price raises :class:`PriceError` naming
it (the strong model's price is checked when the ledger is built); a call
without token usage raises :class:`UsageError`: a cost is never silently zero.

The ledger knows nothing of LangChain or LlamaIndex: their handlers
(``langchain_routellm.ledger``, ``llamaindex_routellm.ledger``) read the decision
record and the usage of each response and call :meth:`Ledger.record_call`. One
lock guards every read and write, so threads and asyncio tasks may share a ledger
(no ``await`` happens under the lock).

Example:
    >>> prices = PriceTable({"big": (10.0, 30.0), "small": (0.5, 1.5)})
    >>> ledger = Ledger(prices, strong_model="big")
    >>> _ = ledger.record_call("weak", "small", input_tokens=1000, output_tokens=500)
    >>> _ = ledger.record_call("strong", "big", input_tokens=1000, output_tokens=500)
    >>> ledger.summary()
    '2 calls, 1 strong (50.0%), cost $0.026250 vs $0.050000 all-strong, saved $0.023750 (47.5%)'
    >>> Ledger(prices, strong_model="huge")
    Traceback (most recent call last):
    ...
    shared_core.ledger.PriceError: no price for model 'huge' (the strong model); the price table has: 'big', 'small'
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from shared_core.errors import ConfigError, RouteLLMError
from shared_core.routers import Role

if TYPE_CHECKING:
    from shared_core.controller import BudgetController

__all__ = ["CallRecord", "Ledger", "Price", "PriceError", "PriceTable", "UnansweredRecord", "UsageError", "check_tokens",
           "completion_token_bound", "prompt_token_bound",
           "ledger_from"]

PER = 1_000_000  # prices are per million tokens


class PriceError(ConfigError):
    """A model has no price, or a price is not a non-negative number."""


class UsageError(RouteLLMError, ValueError):
    """A routed call reported no (or impossible) token usage, so it cannot be priced."""


@dataclass(frozen=True)
class Price:
    """Dollars per million input tokens and per million output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / PER


def _dollars(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PriceError(f"{what} must be a number of dollars per million tokens, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise PriceError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def _price(model: str, value: Any) -> Price:
    if isinstance(value, Price):
        return Price(_dollars(value.input, f"{model!r} input price"), _dollars(value.output, f"{model!r} output price"))
    if isinstance(value, Mapping):
        unknown = set(value) - {"input", "output"}
        if unknown or len(value) != 2:
            raise PriceError(
                f"price of {model!r} must have exactly the keys 'input' and 'output' (dollars per million "
                f"tokens), got {dict(value)!r}"
            )
        return Price(_dollars(value["input"], f"{model!r} input price"),
                     _dollars(value["output"], f"{model!r} output price"))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return Price(_dollars(value[0], f"{model!r} input price"), _dollars(value[1], f"{model!r} output price"))
    raise PriceError(
        f"price of {model!r} must be (input, output) dollars per million tokens, a mapping with 'input' and "
        f"'output', or a Price, got {value!r}"
    )


class PriceTable:
    """Prices by model name: ``{"gpt-4o": (2.5, 10.0), "small": {"input": 0.1, "output": 0.4}}``.

    Values are dollars per million input and output tokens. Read-only once built.
    """

    def __init__(self, prices: Mapping[str, Any]) -> None:
        if isinstance(prices, PriceTable):
            prices = prices.prices
        if not isinstance(prices, Mapping) or not prices:
            raise PriceError(f"prices must be a non-empty mapping of model name to price, got {prices!r}")
        table: dict[str, Price] = {}
        for model, value in prices.items():
            if not isinstance(model, str) or not model:
                raise PriceError(f"price table keys must be model names (non-empty strings), got {model!r}")
            table[model] = _price(model, value)
        self._prices = table

    @property
    def prices(self) -> dict[str, Price]:
        return dict(self._prices)

    def price(self, model: str, role: str | None = None) -> Price:
        """The price of ``model``; raises :class:`PriceError` naming it if it has none."""
        try:
            return self._prices[model]
        except (KeyError, TypeError):
            what = f" (the {role} model)" if role else ""
            known = ", ".join(repr(m) for m in sorted(self._prices))
            raise PriceError(f"no price for model {model!r}{what}; the price table has: {known}") from None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return self.price(model).cost(input_tokens, output_tokens)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {m: {"input": p.input, "output": p.output} for m, p in sorted(self._prices.items())}


def check_tokens(value: Any, what: str, model: str) -> int:
    """A token count as a non-negative int, or :class:`UsageError` naming the model."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{what} of a call answered by {model!r} must be an integer >= 0, got {value!r}")
    return value


#: Tokens allowed for a chat template's own tokens around each message (role markers,
#: separators) and around the whole prompt, on top of the text's bytes (:func:`prompt_token_bound`).
TEMPLATE_TOKENS_PER_MESSAGE, TEMPLATE_TOKENS = 8, 64


def prompt_token_bound(texts: Sequence[str], messages: int) -> int:
    """An upper bound on the prompt tokens of ``messages`` chat messages whose text (and
    every other field sent: tool calls, tool schemas, names) is ``texts``: their UTF-8
    bytes, plus :data:`TEMPLATE_TOKENS_PER_MESSAGE` a message and :data:`TEMPLATE_TOKENS`.

    A byte-level tokenizer (GPT's, Llama's, Mistral's; SentencePiece with byte fallback)
    never makes more tokens of a text than it has bytes. It holds for text only: an image
    or audio part is billed tokens its bytes do not bound. For a strong answer that
    reported no usage (a stream left before its usage chunk), which a budget then charges
    at this bound and the call's max tokens instead of counting its period spent.

    Example:
        >>> prompt_token_bound(["Hi"], messages=1)
        74
    """
    return sum(len(t.encode("utf-8")) for t in texts) + TEMPLATE_TOKENS_PER_MESSAGE * messages + TEMPLATE_TOKENS


def completion_token_bound(limit: Any, n: Any = None) -> Optional[int]:
    """An upper bound on a call's completion tokens: its max tokens ``limit`` times ``n``
    answers (``None``: one), or ``None`` unless both are integers of at least 1.

    Example:
        >>> completion_token_bound(256, 2), completion_token_bound(None), completion_token_bound(True)
        (512, None, None)
    """
    n = 1 if n is None else n
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (limit, n)):
        return None
    return limit * n


@dataclass(frozen=True)
class CallRecord:
    """One priced call. ``strong_cost`` is the same tokens at the strong model's prices."""

    role: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float
    strong_cost: float
    score: Optional[float] = None
    reason: Optional[str] = None
    fallback: bool = False
    #: What the answers rejected by the escalation checks cost (included in ``cost``).
    rejected_cost: float = 0.0
    #: Models whose answers were rejected before this one, in order.
    rejected: tuple[str, ...] = ()

    @property
    def savings(self) -> float:
        return self.strong_cost - self.cost

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "savings": self.savings}


@dataclass(frozen=True)
class UnansweredRecord:
    """Answers the escalation checks rejected in a call that then failed (the model it
    escalated to raised): paid for, though no answer came back. ``cost`` is theirs;
    the counterfactual, the call sent straight to the strong model, failed and cost
    nothing."""

    rejected: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    cost: float
    reason: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """Records routed calls and adds up cost, counterfactual strong cost and savings.

    ``strong_model`` names the strong model in the price table (the counterfactual
    prices every call at its prices). ``budget``, a
    :class:`~shared_core.controller.BudgetController`, is charged the cost of each
    call the strong model answered.
    """

    def __init__(self, prices: PriceTable | Mapping[str, Any], strong_model: str,
                 budget: "BudgetController | None" = None) -> None:
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.strong_model = strong_model
        self._strong_price = self.prices.price(strong_model, "strong")  # a missing price fails here, not later
        if budget is not None and not callable(getattr(budget, "charge", None)):
            raise ConfigError(f"budget must be a BudgetController (with a charge method), got {budget!r}")
        self.budget = budget
        if budget is not None and callable(getattr(budget, "price_with", None)):
            budget.price_with(self.prices)  # for strong streams left before their end (charge_left)
        self._lock = threading.Lock()
        self._calls: list[CallRecord] = []
        self._unanswered: list[UnansweredRecord] = []

    def record_call(
        self,
        role: str | Role,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        score: Optional[float] = None,
        reason: Optional[str] = None,
        fallback: bool = False,
        rejected: Sequence[tuple[str, str, Any, Any]] = (),
    ) -> CallRecord:
        """Price and record one call answered by ``model`` in ``role``.

        ``rejected`` lists the answers the escalation checks turned down before it,
        as ``(role, model, input_tokens, output_tokens)``: they were paid for, so
        their cost is added to the call's ``cost`` (the counterfactual, the call sent
        straight to the strong model, had none)."""
        role = role.value if isinstance(role, Role) else role
        if role not in ("strong", "weak"):
            raise ConfigError(f"role must be 'strong' or 'weak', got {role!r}")
        n_in = check_tokens(input_tokens, "input tokens", model)
        n_out = check_tokens(output_tokens, "output tokens", model)
        cost = self.prices.price(model, role).cost(n_in, n_out)
        rejected_cost = self._rejected_cost(rejected)[0]
        record = CallRecord(role, model, n_in, n_out, cost + rejected_cost, self._strong_price.cost(n_in, n_out),
                            score, reason, bool(fallback), rejected_cost, tuple(r[1] for r in rejected))
        with self._lock:
            self._calls.append(record)
        if self.budget is not None and role == "strong":
            self.budget.charge(cost)
        return record

    def record_decision(self, record: Mapping[str, Any], input_tokens: Any, output_tokens: Any) -> CallRecord:
        """Record a call from its decision record (``response_metadata["routellm"]`` in
        LangChain, ``additional_kwargs["routellm"]`` in LlamaIndex) and its usage.

        A call without usage raises :class:`UsageError`; if the strong model gave it and the
        ledger charges a budget, the budget is charged first as for any strong answer of
        unknown cost (:meth:`~shared_core.controller.BudgetController.charge_unbounded`: its
        reserve, or with none the period), as a cost is never taken to be zero."""
        model = record.get("model")
        if input_tokens is None or output_tokens is None:
            charged = ""
            unbounded = getattr(self.budget, "charge_unbounded", None)  # a BudgetController's; None without one
            if unbounded is not None and record.get("role") == "strong":
                spent = unbounded()
                charged = ("; the budget's period counts as spent" if spent == math.inf
                           else f"; the budget was charged its reserve, ${spent:g}")
            raise UsageError(
                f"the call answered by {model!r} ({record.get('role')}) reported no token usage "
                f"(input {input_tokens!r}, output {output_tokens!r}); the ledger cannot price it{charged}"
            )
        return self.record_call(
            record.get("role"), model, input_tokens, output_tokens, score=record.get("score"),
            reason=record.get("reason"), fallback=bool(record.get("fallback")),
            rejected=_rejected_usage(record.get("escalations") or ()),
        )

    def record_unanswered(self, escalations: Sequence[Mapping[str, Any]]) -> UnansweredRecord:
        """Price the answers rejected in a call that then failed: ``escalations`` as a
        decision record lists them (``role``, ``model``, ``reason``, ``usage``;
        :func:`shared_core.engine.rejected_records`). Their cost counts in the totals'
        ``cost`` and ``unanswered_cost``; no call is added (nothing answered), and no
        counterfactual cost (the strong model failed). A rejected answer without usage
        raises :class:`UsageError`, as everywhere."""
        rejected = _rejected_usage(escalations)
        if not rejected:
            raise ConfigError("record_unanswered needs at least one rejected answer, got none")
        cost, n_in, n_out = self._rejected_cost(rejected)
        first = escalations[0]
        record = UnansweredRecord(tuple(r[1] for r in rejected), n_in, n_out, cost, first.get("reason"))
        with self._lock:
            self._unanswered.append(record)
        return record

    def _rejected_cost(self, rejected: Sequence[tuple[str, str, Any, Any]]) -> tuple[float, int, int]:
        cost, total_in, total_out = 0.0, 0, 0
        for r_role, r_model, r_in, r_out in rejected:
            n_in = check_tokens(r_in, "input tokens", r_model)
            n_out = check_tokens(r_out, "output tokens", r_model)
            cost += self.prices.price(r_model, r_role).cost(n_in, n_out)
            total_in, total_out = total_in + n_in, total_out + n_out
        return cost, total_in, total_out

    # Reading ---------------------------------------------------------------------------
    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    @property
    def unanswered(self) -> list[UnansweredRecord]:
        """The rejected answers of calls that failed (:meth:`record_unanswered`)."""
        with self._lock:
            return list(self._unanswered)

    def totals(self) -> dict[str, Any]:
        with self._lock:
            calls, unanswered = list(self._calls), list(self._unanswered)
        unanswered_cost = sum(u.cost for u in unanswered)
        cost = sum(c.cost for c in calls) + unanswered_cost
        strong_cost = sum(c.strong_cost for c in calls)
        n_strong = sum(c.role == "strong" for c in calls)
        return {
            "calls": len(calls),
            "strong_calls": n_strong,
            "weak_calls": len(calls) - n_strong,
            "strong_share": n_strong / len(calls) if calls else None,
            "input_tokens": sum(c.input_tokens for c in calls),
            "output_tokens": sum(c.output_tokens for c in calls),
            "unanswered_answers": sum(len(u.rejected) for u in unanswered),
            "unanswered_cost": unanswered_cost,
            "cost": cost,
            "strong_cost": strong_cost,
            "savings": strong_cost - cost,
            "savings_share": (strong_cost - cost) / strong_cost if strong_cost > 0 else None,
            "by_role": {
                role: {
                    "calls": sum(c.role == role for c in calls),
                    "cost": sum(c.cost for c in calls if c.role == role),
                    "strong_cost": sum(c.strong_cost for c in calls if c.role == role),
                }
                for role in ("strong", "weak")
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "strong_model": self.strong_model,
            "prices": self.prices.to_dict(),
            "output_tokens_estimate": "the strong model is assumed to write as many output tokens as the "
                                      "answering model did, on the same input tokens",
            "totals": self.totals(),
            "calls": [c.to_dict() for c in self.calls],
            "unanswered": [u.to_dict() for u in self.unanswered],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        t = self.totals()
        n = t["unanswered_answers"]
        lost = (f", {n} rejected answer{'s' if n != 1 else ''} of a failed call (${t['unanswered_cost']:.6f}, "
                f"in the cost)" if n else "")
        if not t["calls"]:
            return "0 calls" + lost
        saved = f" ({t['savings_share']:.1%})" if t["savings_share"] is not None else ""
        return (
            f"{t['calls']} calls, {t['strong_calls']} strong ({t['strong_share']:.1%}), cost ${t['cost']:.6f} "
            f"vs ${t['strong_cost']:.6f} all-strong, saved ${t['savings']:.6f}{saved}{lost}"
        )

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._unanswered.clear()


def _rejected_usage(escalations: Sequence[Any]) -> list[tuple[Any, Any, Any, Any]]:
    """``(role, model, input_tokens, output_tokens)`` of each rejected answer of a record."""
    rejected = []
    for entry in escalations:
        usage = entry.get("usage") if isinstance(entry, Mapping) else None
        if not isinstance(usage, Mapping) or usage.get("input_tokens") is None or usage.get("output_tokens") is None:
            raise UsageError(
                f"the answer of {entry.get('model') if isinstance(entry, Mapping) else entry!r} rejected by the "
                f"escalation checks reported no token usage ({usage!r}); the ledger cannot price it"
            )
        rejected.append((entry.get("role"), entry.get("model"), usage["input_tokens"], usage["output_tokens"]))
    return rejected


def ledger_from(ledger: Optional[Ledger], prices: PriceTable | Mapping[str, Any] | None, strong_model: Optional[str],
                budget: "BudgetController | None", owner: str) -> Ledger:
    """The ledger a handler (``owner``) was given, or one built from ``prices`` and ``strong_model``."""
    if ledger is not None:
        if prices is not None or strong_model is not None or budget is not None:
            raise ConfigError(f"{owner}: give either ledger or prices/strong_model/budget, not both")
        if not isinstance(ledger, Ledger):
            raise ConfigError(f"{owner}: ledger must be a shared_core.ledger.Ledger, got {type(ledger).__name__}: "
                              f"{ledger!r}")
        return ledger
    if prices is None or strong_model is None:
        raise ConfigError(f"{owner} needs a ledger, or prices and strong_model")
    return Ledger(prices, strong_model, budget=budget)
