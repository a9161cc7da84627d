"""Controllers that move the threshold online: a strong-share target, or a spend cap per period.

A controller is given to the routing settings (``controller=``); the
:class:`~shared_core.engine.RoutingEngine` then asks it for every decision
(:meth:`Controller.decide`), in order (a batch: each decision of the batch in
turn), and the controller observes each scored decision. The threshold on a
decision is the one the controller used for it.

:class:`ShareController` keeps the strong share at ``target`` over a sliding
window of the last ``window`` scored decisions. After each score it computes the
threshold that would have sent ``target + gain * (target - realised)`` (clipped
to [0, 1]) of the last ``score_window`` scores to the strong model (an empirical
quantile; ``realised`` is the strong share of the last ``window`` decisions),
and moves the threshold towards it by at most ``max_step``. The quantile follows
the traffic (a short ``score_window`` follows a drift quickly); the feedback on
the realised share corrects what the quantile alone lets drift (with a high
``gain`` the window's count is held close to ``target * window``). Until
``min_scores`` scores are seen it keeps its starting threshold
(``initial_threshold``, else the engine's, that is the one ``threshold`` or
``strong_fraction`` gave). Nothing is random: the same score sequence gives the
same thresholds. The defaults are those ``benchmarks/simulate_controller.py``
measures (``docs/costs.md``).

:class:`BudgetController` caps what the **strong** model may cost in a period
(``period`` seconds, periods aligned to the clock: ``floor(time / period)``).
A :class:`~shared_core.ledger.Ledger` built with ``budget=`` charges it the cost
of each strong call. A call is sent strong only if ``spent`` is below the budget
and ``spent + reserve`` (the reserve of calls admitted but not charged yet
included) stays within it (a zero budget admits no strong call); otherwise it
goes weak, with the reason ``"budget_exhausted"`` where it would have gone
strong. With ``reserve`` at least the cost of one strong call, the strong spend
of a period never exceeds the budget. :meth:`BudgetController.release` frees the
reservation of a strong call that failed; :meth:`BudgetController.charge_unknown`
charges a strong call whose cost is unknown (no usage) as the rest of the
period's budget; :meth:`BudgetController.charge_left` charges a strong stream the
caller left before its end (no ledger sees it end) at its usage or an upper bound
on it, with the prices of the ledger built with ``budget=``, and
:meth:`BudgetController.charge_unbounded` one with neither: ``reserve`` (at least
one strong call's cost), or with no reserve the period. Weak calls are never
refused (the router cannot refuse a call), so they are not capped. ``inner`` (a
ShareController) decides while the budget lasts; without it, the engine's threshold does.

Both are thread- and async-safe (one lock each; nothing awaits under it) and
save their state as a plain dict (:meth:`Controller.to_state`, JSON-ready) that
:func:`controller_from_state` (or ``Class.from_state``) restores exactly.

Example (400 scores spread over [0, 1), the engine's threshold 0.5 to start from):
    >>> share = ShareController(target=0.2, window=100, min_scores=20)
    >>> roles = [share.decide((i * 0.618) % 1, 0.5).role.value for i in range(400)]
    >>> roles[-100:].count("strong")
    21
    >>> restored = ShareController.from_state(share.to_state())
    >>> restored.decide(0.79, 0.5) == share.decide(0.79, 0.5)
    True
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

from shared_core.errors import ConfigError
from shared_core.routers import Role, check_threshold
from shared_core.routers.base import NEVER_STRONG
from shared_core.thresholds import check_fraction

log = logging.getLogger(__name__)

__all__ = [
    "BUDGET_EXHAUSTED", "BudgetController", "Control", "Controller", "Reservations", "ShareController",
    "controller_from_state",
]

#: The ``reason`` of a decision sent weak because the period's budget is spent.
BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass(frozen=True)
class Control:
    """What a controller decided for one call: the role, the threshold used, why."""

    role: Role
    threshold: float
    reason: str


class Controller(ABC):
    """Decides each call's role from its score; holds state that can be saved."""

    kind: str = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def decide(self, score: Optional[float], threshold: float, default: Role = Role.STRONG,
               reason: str = "score") -> Control:
        """The decision for ``score`` (``None``: nothing to score, ``default`` and
        ``reason`` say where it would go and why); ``threshold`` is the engine's."""

    def preview(self, score: Optional[float], threshold: float, default: Role = Role.STRONG,
                reason: str = "score") -> Control:
        """What :meth:`decide` would give now, changing nothing (no score observed,
        nothing reserved): for a decision no call follows, such as ``route()``.
        This base version applies ``threshold``; the controllers here override it."""
        if score is None:
            return Control(default, threshold, reason)
        return Control(Role.STRONG if score >= threshold else Role.WEAK, threshold, "score")

    @abstractmethod
    def to_state(self) -> dict[str, Any]:
        """The full state as a plain, JSON-ready dict."""

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Controller":
        controller = controller_from_state(state)
        if not isinstance(controller, cls):
            raise ConfigError(f"state is of a {type(controller).__name__}, not a {cls.__name__}")
        return controller

    # Copies and pickles carry the state, with a new lock.
    def __reduce__(self) -> tuple[Any, ...]:
        return (controller_from_state, (self.to_state(),))

    def __deepcopy__(self, memo: dict[int, Any]) -> "Controller":
        return controller_from_state(self.to_state())


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, name: str, low: float = 0.0, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = (value > low if low_open else value >= low) and value <= high
    if math.isnan(value) or not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ConfigError(f"{name} must be {bound}" + (f" and <= {high}" if high != math.inf else "") +
                          f", got {value!r}")
    return value


class ShareController(Controller):
    """Keep the strong share at ``target`` over the last ``window`` scored decisions.

    ``score_window``: how many recent scores the quantile is taken on (``None``:
    ``window``); ``max_step`` bounds how far the threshold moves after one
    score; ``gain`` weighs the window's realised share against the target (0:
    follow the quantile only); ``min_scores`` scores are seen before it moves.
    """

    kind = "share"

    def __init__(self, target: float, *, window: int = 500, score_window: Optional[int] = 100,
                 max_step: float = 0.05, gain: float = 50.0, min_scores: int = 50,
                 initial_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.target = check_fraction(target)
        self.window = _positive_int(window, "window", 2)
        self.score_window = self.window if score_window is None else _positive_int(score_window, "score_window", 2)
        self.max_step = _number(max_step, "max_step", 0.0, 1.0, low_open=True)
        self.gain = _number(gain, "gain")
        self.min_scores = _positive_int(min_scores, "min_scores")
        if self.min_scores > min(self.window, self.score_window):
            raise ConfigError(f"min_scores ({min_scores}) must be <= window ({window}) and score_window "
                              f"({self.score_window})")
        self.initial_threshold = None if initial_threshold is None else check_threshold(initial_threshold)
        self._threshold: Optional[float] = self.initial_threshold
        self._scores: deque[float] = deque(maxlen=self.score_window)
        self._strong: deque[bool] = deque(maxlen=self.window)
        self._observed = 0

    @property
    def threshold(self) -> Optional[float]:
        """The threshold the next scored call gets (``None`` before the first call
        when no ``initial_threshold`` was given: the engine's is taken then)."""
        with self._lock:
            return self._threshold

    @property
    def realised_share(self) -> Optional[float]:
        """The strong share of the window's decisions."""
        with self._lock:
            return sum(self._strong) / len(self._strong) if self._strong else None

    def decide(self, score: Optional[float], threshold: float, default: Role = Role.STRONG,
               reason: str = "score") -> Control:
        with self._lock:
            if self._threshold is None:
                self._threshold = check_threshold(threshold)
            current = self._threshold
            if score is None:
                return Control(default, current, reason)
            strong = score >= current
            self._observe(float(score), strong)
            return Control(Role.STRONG if strong else Role.WEAK, current, "score")

    def preview(self, score: Optional[float], threshold: float, default: Role = Role.STRONG,
                reason: str = "score") -> Control:
        with self._lock:
            current = self._threshold if self._threshold is not None else check_threshold(threshold)
        return super().preview(score, current, default, reason)

    def _observe(self, score: float, strong: bool) -> None:
        self._scores.append(score)
        self._strong.append(strong)
        self._observed += 1
        if len(self._scores) < self.min_scores:
            return
        realised = sum(self._strong) / len(self._strong)
        wanted = min(1.0, max(0.0, self.target + self.gain * (self.target - realised)))
        window = np.fromiter(self._scores, float, len(self._scores))
        if wanted <= 0.0:  # none strong: just above the highest score (ties at the top too)
            goal = min(NEVER_STRONG, math.nextafter(float(window.max()), math.inf))
        else:  # strong when score >= threshold: the (1 - wanted) quantile sends ``wanted`` of them strong
            goal = float(np.quantile(window, 1.0 - wanted))
        step = min(self.max_step, max(-self.max_step, goal - self._threshold))
        self._threshold = min(NEVER_STRONG, max(0.0, self._threshold + step))

    def to_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "kind": self.kind, "target": self.target, "window": self.window, "score_window": self.score_window,
                "max_step": self.max_step,
                "gain": self.gain, "min_scores": self.min_scores, "initial_threshold": self.initial_threshold,
                "threshold": self._threshold, "scores": list(self._scores), "strong": list(self._strong),
                "observed": self._observed,
            }

    @classmethod
    def _restore(cls, state: Mapping[str, Any]) -> "ShareController":
        new = cls(state["target"], window=state["window"], score_window=state["score_window"], max_step=state["max_step"], gain=state["gain"],
                  min_scores=state["min_scores"], initial_threshold=state["initial_threshold"])
        scores, strong = list(state["scores"]), list(state["strong"])
        if len(scores) > new.score_window or len(strong) > new.window:
            raise ConfigError(f"share controller state has {len(scores)} scores and {len(strong)} decisions; "
                              f"expected at most score_window={new.score_window} and window={new.window}")
        new._threshold = None if state["threshold"] is None else check_threshold(state["threshold"])
        new._scores.extend(float(s) for s in scores)
        new._strong.extend(bool(s) for s in strong)
        new._observed = _positive_int(state["observed"], "observed", 0)
        return new


class BudgetController(Controller):
    """Cap the strong model's spend at ``budget`` dollars per ``period`` seconds.

    ``reserve`` (dollars) is held back for each strong call between its decision
    and its charge; ``inner`` decides while the budget lasts; ``clock`` returns
    seconds (``time.time`` by default; a test passes its own).
    """

    kind = "budget"

    def __init__(self, budget: float, period: float = 3600.0, *, reserve: float = 0.0,
                 inner: Optional[Controller] = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.budget = _number(budget, "budget")
        self.period = _number(period, "period", 0.0, low_open=True)
        self.reserve = _number(reserve, "reserve")
        if inner is not None and (not isinstance(inner, Controller) or isinstance(inner, BudgetController)):
            raise ConfigError(f"inner must be a ShareController or None, got {inner!r}")
        if not callable(clock):
            raise ConfigError(f"clock must be a function returning seconds, got {clock!r}")
        self.inner = inner
        self.clock = clock
        self._period_index: Optional[int] = None
        self._spent = 0.0
        self._pending = 0  # strong calls decided, not yet charged
        self._prices: Any = None  # a Ledger's PriceTable (price_with), for answers no ledger charges

    def _roll(self) -> None:
        index = math.floor(self.clock() / self.period)
        if index != self._period_index:
            self._period_index, self._spent, self._pending = index, 0.0, 0

    @property
    def spent(self) -> float:
        """Strong spend charged in the current period."""
        with self._lock:
            self._roll()
            return self._spent

    @property
    def remaining(self) -> float:
        with self._lock:
            self._roll()
            return self.budget - self._spent - self._pending * self.reserve

    def charge(self, cost: float) -> None:
        """Add the cost of a call the strong model answered (a Ledger with ``budget=`` does)."""
        cost = _number(cost, "cost")
        with self._lock:
            self._roll()
            self._spent += cost
            self._pending = max(0, self._pending - 1)

    def charge_unknown(self) -> None:
        """A strong call whose cost is not known (it reported no usage): as a cost is never
        taken to be zero, the period's budget counts as spent (strong calls resume next period)."""
        with self._lock:
            self._roll()
            self._spent = max(self._spent, self.budget) + math.ulp(self.budget)  # over the cap, finite
            self._pending = max(0, self._pending - 1)

    def price_with(self, prices: Any) -> None:
        """The :class:`~shared_core.ledger.PriceTable` that prices strong answers no ledger
        sees the end of (:meth:`charge_left`); a Ledger built with ``budget=`` gives its own."""
        if not callable(getattr(prices, "price", None)):
            raise ConfigError(f"prices must be a PriceTable, got {prices!r}")
        self._prices = prices

    def charge_unbounded(self) -> float:
        """A strong answer with no usage and no bound on its tokens: charged ``reserve``, which
        is to be at least one strong call's cost, or, with no reserve, as :meth:`charge_unknown`
        (the period's budget counts as spent). Returns the dollars charged (``inf`` for the period)."""
        if self.reserve > 0:
            self.charge(self.reserve)
            return self.reserve
        self.charge_unknown()
        return math.inf

    def charge_left(self, model: str, tokens: Optional[tuple[int, int]]) -> Optional[float]:
        """Charge a strong answer that was left before its end (a stream the caller stopped,
        so no ledger prices it) at ``tokens``, its prompt and completion tokens (its usage,
        or upper bounds: :func:`~shared_core.ledger.prompt_token_bound` and the call's max
        tokens), at ``model``'s strong price in the table of :meth:`price_with`; ``tokens``
        ``None`` (no bound: no max tokens, an image) or no price for ``model``:
        :meth:`charge_unbounded`. Returns the dollars charged; ``None``, charging nothing,
        without prices (no ledger with ``budget=``): its reservation then stays held until
        the period ends, as for any strong answer no ledger charges."""
        if self._prices is None:
            return None
        try:
            cost = None if tokens is None else self._prices.price(model, "strong").cost(*tokens)
        except ConfigError:  # no price for the model that answered: its cost is unknown
            cost = None
        if cost is None:
            return self.charge_unbounded()
        self.charge(cost)
        return cost

    def release(self) -> None:
        """Free the reservation of a call decided strong that the strong model did not answer
        (it failed); nothing is charged."""
        with self._lock:
            self._roll()
            self._pending = max(0, self._pending - 1)

    def decide(self, score: Optional[float], threshold: float, default: Role = Role.STRONG,
               reason: str = "score") -> Control:
        return self._decide(score, threshold, default, reason, observe=True)

    def preview(self, score: Optional[float], threshold: float, default: Role = Role.STRONG,
                reason: str = "score") -> Control:
        return self._decide(score, threshold, default, reason, observe=False)

    def _decide(self, score: Optional[float], threshold: float, default: Role, reason: str, *,
                observe: bool) -> Control:
        with self._lock:
            self._roll()
            # Room for one more strong call: none once the spend reached the cap (with no reserve
            # too: a zero budget admits nothing), nor if its reserve would pass the cap.
            if self._spent >= self.budget or self._spent + (self._pending + 1) * self.reserve > self.budget:
                # Spent: weak. The reason says so where the call would have gone strong; the
                # inner controller is not asked (it would count a decision it did not make).
                inner = None if self.inner is None else getattr(self.inner, "threshold", None)
                used = threshold if inner is None else inner
                would = default is Role.STRONG if score is None else score >= used
                return Control(Role.WEAK, used, BUDGET_EXHAUSTED if would else reason)
            if self.inner is not None:
                ask = self.inner.decide if observe else self.inner.preview
                control = ask(score, threshold, default, reason)
            elif score is None:
                control = Control(default, threshold, reason)
            else:
                control = Control(Role.STRONG if score >= threshold else Role.WEAK, threshold, "score")
            if control.role is Role.STRONG and observe:  # a preview reserves nothing: no call follows
                self._pending += 1
            return control

    def to_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "kind": self.kind, "budget": self.budget, "period": self.period, "reserve": self.reserve,
                "period_index": self._period_index, "spent": self._spent, "pending": self._pending,
                "inner": None if self.inner is None else self.inner.to_state(),
            }

    @classmethod
    def _restore(cls, state: Mapping[str, Any], clock: Callable[[], float] = time.time) -> "BudgetController":
        inner = None if state.get("inner") is None else controller_from_state(state["inner"])
        new = cls(state["budget"], state["period"], reserve=state["reserve"], inner=inner, clock=clock)
        new._period_index = state["period_index"]
        new._spent = _number(state["spent"], "spent")
        new._pending = _positive_int(state["pending"], "pending", 0)
        return new

    @classmethod
    def from_state(cls, state: Mapping[str, Any], clock: Callable[[], float] = time.time) -> "BudgetController":
        if not isinstance(state, Mapping) or state.get("kind") != cls.kind:
            raise ConfigError(f"not a budget controller state: {state!r}"[:200])
        return cls._restore(state, clock)


class Reservations:
    """One call's reservations under a budget (``budget`` ``None``: no budget, nothing held):
    the one a strong decision of the controller holds (a pinned thread's decision, which it
    never saw, holds none), and one per escalation the budget admits (:meth:`admit_escalation`;
    one it does not admit is kept in ``refused`` for the record). :meth:`release` frees one,
    for a strong call that will not be charged. The wrappers and the server share it."""

    def __init__(self, budget: Optional[BudgetController], decision: Any) -> None:
        self.budget = budget
        self.threshold = decision.threshold
        self.held = int(budget is not None and decision.role is Role.STRONG and decision.reason != "pinned")
        self.refused: Optional[dict[str, str]] = None

    def admit_escalation(self, reason: str) -> bool:
        """Whether the budget admits an escalation for ``reason`` (a check's rejection); if so, one more is held."""
        if self.budget is None:
            return True
        if self.budget.decide(None, self.threshold, Role.STRONG, "escalation").role is Role.STRONG:
            self.held += 1
            return True
        self.refused = {"reason": reason, "because": BUDGET_EXHAUSTED}
        return False

    def release(self) -> None:
        """Free one held reservation, if any."""
        if self.held:
            self.held -= 1
            self.budget.release()  # type: ignore[union-attr]  # held only with a budget

    def leave(self, model: str, tokens: Optional[tuple[int, int]]) -> Optional[float]:
        """The strong answer was left before its end: charged at its usage or bound
        ``tokens`` (``None``: none; :meth:`BudgetController.charge_left`), and every other
        reservation of the call freed, as nothing else of it will be charged. Returns what
        was charged, or ``None`` (nothing held, or no prices: the reservations stay held)."""
        if not self.held:
            return None
        charged = self.budget.charge_left(model, tokens)  # type: ignore[union-attr]
        if charged is None:
            return None
        if tokens is None:
            what = "the budget's period counts as spent" if charged == math.inf else f"charged the reserve ${charged:g}"
            log.warning("routellm: a strong stream of %r was left before its usage, with no bound on its tokens (its "
                        "call sets no max tokens): %s; set max_tokens on the strong model to have it charged its "
                        "bound instead", model, what)
        self.held -= 1
        while self.held:
            self.release()
        return charged

    def leave_answer(self, outcome: Any, counts: tuple[int, int],
                     bounds: Callable[[], Optional[tuple[int, int]]]) -> Optional[float]:
        """A stream the caller left after its first chunk (``outcome``: the attempt loop's,
        what was answering): if the strong model was, :meth:`leave` at its usage if the whole
        of it came (``counts``: prompt and completion tokens so far, 0 for one not reported),
        else at ``bounds()`` (a prompt count that came is kept), or with no bound ``None``."""
        if outcome is None or outcome.role is not Role.STRONG:
            return None
        n_in, n_out = counts
        if n_in and n_out:
            return self.leave(outcome.model_name, (n_in, n_out))
        found = bounds()
        return self.leave(outcome.model_name, None if found is None else (n_in or found[0], found[1]))


_KINDS: dict[str, Any] = {ShareController.kind: ShareController, BudgetController.kind: BudgetController}


def controller_from_state(state: Mapping[str, Any]) -> Controller:
    """Rebuild a controller from :meth:`Controller.to_state` (a budget controller gets ``time.time``)."""
    if not isinstance(state, Mapping) or state.get("kind") not in _KINDS:
        raise ConfigError(f"controller state must be a dict with 'kind' in {sorted(_KINDS)}, got {state!r}"[:300])
    try:
        return _KINDS[state["kind"]]._restore(state)
    except KeyError as exc:
        raise ConfigError(f"{state['kind']} controller state is missing {exc.args[0]!r}") from None
