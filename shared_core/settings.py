"""The routing settings every integration shares, declared and validated once.

:class:`RoutingSettings` is a pydantic model of the fields ``RouteLLMChat``,
``RouteLLMRunnable`` and the LlamaIndex ``RouteLLM`` have in common (router,
threshold or strong fraction, calibration prompts, where calls with no text go,
fallback, which errors fall back, timeout), with one validator each.
:class:`RoutedModel` adds what an integration needs on top: the
:class:`~shared_core.engine.RoutingEngine` built from those fields, kept in step
with them (setting a field, or ``model_copy(update=...)``, rebuilds it; a bad
value raises and leaves the object as it was), copies and pickles that rebuild
the engine instead of carrying it, and the :class:`~shared_core.attempts.Attempts`
loop for a decision.

Example:
    >>> settings = RoutingSettings(router="random", threshold=0.5, fallback=True, timeout=30)
    >>> settings.timeout, settings.on_no_text
    (30.0, 'strong')
    >>> RoutingSettings(router="random", calibration_prompts="one string")
    Traceback (most recent call last):
    ...
    shared_core.errors.ConfigError: calibration_prompts must be a list of strings, got a single string 'one string'; wrap it in a list
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from shared_core.attempts import Attempts, FallbackOn, Failure, Outcome, check_timeout, fallback_predicate, model_label
from shared_core.controller import BudgetController, Controller, Reservations
from shared_core.engine import RoutingEngine, attempt_order, check_controller, outcome_record
from shared_core.errors import ConfigError
from shared_core.escalation import AnswerChecks, AnswerView, CallContext
from shared_core.ladder import LadderDecision
from shared_core.policy import ThreadPins, check_route_on, check_thread_id
from shared_core.routers import Decision, Role, Router, check_prompts, check_threshold
from shared_core.thresholds import check_fraction

__all__ = ["ENGINE_FIELDS", "ROUTING_FIELDS", "RoutedModel", "RoutingSettings", "config_errors", "ladder_ends",
           "pop_timeout"]

M = TypeVar("M")

#: The fields the routing engine is built from.
ENGINE_FIELDS = (
    "router", "threshold", "strong_fraction", "calibration_prompts", "on_no_text", "controller", "route_on", "ladder",
)
#: Every shared routing field.
ROUTING_FIELDS = ENGINE_FIELDS + ("fallback", "fallback_on", "timeout", "escalate_on", "pin_threads")


class RoutingSettings(BaseModel):
    """Router, threshold or strong fraction, and how calls are attempted."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    router: Any = Field(
        default=None,
        description="None (the shipped default router), a registry name ('random', 'mf', ...), a RouteLLM "
        "model string ('router-mf-0.11593', which carries the threshold), a directory saved with Router.save, "
        "or a Router object.",
    )
    threshold: Optional[float] = Field(
        default=None, description="Send a call to the strong model when its score is >= this value, in [0, 1]."
    )
    strong_fraction: Optional[float] = Field(
        default=None,
        description="Instead of a threshold: the share of calls for the strong model, in [0, 1], calibrated on "
        "calibration_prompts or the router's reference quantiles. Neither given means 0.5.",
    )
    calibration_prompts: Optional[List[str]] = Field(
        default=None, description="Prompts (a list of strings, not one string) to calibrate strong_fraction on."
    )
    on_no_text: Literal["strong", "weak"] = Field(
        default="strong", description="Where a call with no text to score goes: 'strong' or 'weak'."
    )
    controller: Any = Field(
        default=None,
        description="A shared_core.controller ShareController (keeps the strong share at a target by moving the "
        "threshold online; it starts from threshold or strong_fraction) or BudgetController (caps the strong "
        "model's spend per period); None: the threshold is fixed. Copies of this object share it.",
    )
    fallback: bool = Field(
        default=False,
        description="If the chosen model fails with a fallback_on error, call the other one and record it. "
        "A stream falls back only before its first chunk.",
    )
    fallback_on: Any = Field(
        default=None,
        description="Exception types, or a predicate, that trigger the fallback; None means provider errors "
        "(connection errors, timeouts, HTTP 429 and 5xx), never a TypeError or ValueError.",
    )
    timeout: Optional[float] = Field(
        default=None,
        description="Seconds each model may take (a stream: for each chunk); running out raises "
        "ModelTimeoutError, which falls back when fallback is on. None: no limit.",
    )

    escalate_on: Any = Field(
        default=None,
        description="Checks on a weak answer that send the same call to the strong model (the next rung up): "
        "None (off), 'all', or a list of 'empty', 'refusal', 'length', 'tool_calls', 'structured', check objects "
        "of shared_core.escalation and predicates view -> bool | reason. Streams are buffered while checked.",
    )
    route_on: Literal["last_user", "last_turn"] = Field(
        default="last_user",
        description="Which text the router scores: the last user message, or the previous turn with it.",
    )
    pin_threads: int = Field(
        default=0,
        description="Pin each conversation (by the thread id the caller passes) to the model its first call "
        "went to, unless an answer escalates; remembers this many threads (least recently used dropped). 0: off.",
    )
    ladder: Optional[List[Any]] = Field(
        default=None,
        description="Instead of strong / weak: (model, name in the router's model table, threshold) rungs, "
        "cheapest first; a call goes to the cheapest model whose predicted quality reaches its threshold "
        "(the top rung's threshold may be None). Needs a router that scores each model (irt).",
    )

    def __init__(self, **data: Any) -> None:
        # Our validators raise ConfigError; pydantic would wrap it in a ValidationError.
        with config_errors(type(self)):
            super().__init__(**data)

    # One validator a field ---------------------------------------------------------------
    @field_validator("router", mode="before")
    @classmethod
    def _check_router(cls, value: Any) -> Any:
        if value is None or isinstance(value, (str, Path, Router)):
            return value
        raise ConfigError(
            f"router must be None, a registry name, a RouteLLM model string, a path or a Router object, "
            f"got {type(value).__name__}: {value!r}"
        )

    @field_validator("threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> Optional[float]:
        return None if value is None else check_threshold(value)

    @field_validator("strong_fraction", mode="before")
    @classmethod
    def _check_fraction(cls, value: Any) -> Optional[float]:
        return None if value is None else check_fraction(value)

    @field_validator("calibration_prompts", mode="before")
    @classmethod
    def _check_calibration_prompts(cls, value: Any) -> Optional[List[str]]:
        if value is None:
            return None
        try:
            return check_prompts(value)  # reads an iterator once; refuses a bare string
        except ConfigError as exc:
            raise ConfigError(f"calibration_{exc}") from None

    @field_validator("on_no_text", mode="before")
    @classmethod
    def _check_on_no_text(cls, value: Any) -> str:
        if isinstance(value, Role):
            return value.value
        if value not in ("strong", "weak"):
            raise ConfigError(f"on_no_text must be 'strong' or 'weak', got {value!r}")
        return value

    @field_validator("controller", mode="before")
    @classmethod
    def _check_controller(cls, value: Any) -> Any:
        return check_controller(value)

    @field_validator("fallback", mode="before")
    @classmethod
    def _check_fallback(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(f"fallback must be True or False, got {value!r}")
        return value

    @field_validator("fallback_on", mode="before")
    @classmethod
    def _check_fallback_on(cls, value: FallbackOn) -> FallbackOn:
        if isinstance(value, list):
            value = tuple(value)
        fallback_predicate(value)
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _check_timeout(cls, value: Any) -> Optional[float]:
        return check_timeout(value)

    @field_validator("escalate_on", mode="before")
    @classmethod
    def _check_escalate_on(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        AnswerChecks.from_spec(value)
        return value

    @field_validator("route_on", mode="before")
    @classmethod
    def _check_route_on(cls, value: Any) -> str:
        return check_route_on(value)

    @field_validator("pin_threads", mode="before")
    @classmethod
    def _check_pin_threads(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"pin_threads must be a number of threads >= 0 (0: off), got {value!r}")
        return value

    @field_validator("ladder", mode="before")
    @classmethod
    def _check_ladder(cls, value: Any) -> Optional[List[Any]]:
        if value is None:
            return None
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"ladder must be a list of (model, name, threshold) rungs, got {value!r}")
        rungs = [tuple(r) if isinstance(r, list) else r for r in value]
        for i, rung in enumerate(rungs):
            if not (isinstance(rung, tuple) and len(rung) == 3):
                raise ConfigError(f"ladder[{i}] must be a (model, name, threshold) triple, got {rung!r}")
        if len(rungs) < 2:
            raise ConfigError(f"a ladder needs at least two rungs, got {len(rungs)}")
        return rungs

    # What the settings make ------------------------------------------------------------------
    def routing_values(self) -> Dict[str, Any]:
        """The shared routing fields of this object, by name."""
        return {name: getattr(self, name) for name in ROUTING_FIELDS}

    def build_engine(self) -> RoutingEngine:
        """A routing engine for these settings (the combination is checked here:
        threshold and strong_fraction exclude each other and a model string)."""
        return RoutingEngine.from_settings(
            router=self.router, threshold=self.threshold, strong_fraction=self.strong_fraction,
            calibration_prompts=self.calibration_prompts, on_no_text=self.on_no_text, controller=self.controller,
            route_on=self.route_on,
            ladder=None if self.ladder is None else [(name, thr) for _, name, thr in self.ladder],
        )


@contextlib.contextmanager
def config_errors(owner: type) -> Iterator[None]:
    """Turn pydantic's :class:`ValidationError` from building ``owner`` into one
    :class:`ConfigError` that lists each problem (our validators' own messages,
    unknown keyword arguments by name)."""
    try:
        yield
    except ValidationError as exc:
        problems, unknown = [], []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if error.get("type") == "extra_forbidden":
                unknown.append(".".join(str(p) for p in error.get("loc", ())))
            elif isinstance(cause, ConfigError):
                problems.append(str(cause))
            else:
                where = ".".join(str(p) for p in error.get("loc", ())) or owner.__name__
                problems.append(f"{where}: {error.get('msg')} (got {error.get('input')!r})")
        if unknown:
            known = ", ".join(sorted(getattr(owner, "model_fields", {})))
            problems.insert(0, f"{owner.__name__} got unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                               f"expected some of: {known}")
        raise ConfigError("; ".join(problems)) from None


class RoutedModel(RoutingSettings):
    """Base of the integrations: the shared settings plus the engine built from them.

    Subclass it first (``class RouteLLMChat(RoutedModel, BaseChatModel)``). The
    engine is built once the object is validated; afterwards a routing field can
    be set (``llm.threshold = 0.9``) or changed in ``model_copy(update=...)``,
    which validates the new value and rebuilds the engine. Copies share the router
    object (routers are read-only); pickles carry the router as its setting (a
    name or a path) and rebuild the engine, so they do not pickle loaded models.
    """

    _engine: Optional[RoutingEngine] = PrivateAttr(default=None)
    _pins: Optional[ThreadPins] = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._engine = self.build_engine()
        self._pins = ThreadPins(self.pin_threads) if self.pin_threads else None

    @property
    def engine(self) -> RoutingEngine:
        """The routing engine (router, threshold, message policy) in use."""
        if self._engine is None:  # pragma: no cover - set by model_post_init
            self._engine = self.build_engine()
        return self._engine

    def record_feedback(self, target: Any, outcome: Any, *, store: Any = None) -> Any:
        """Record how a routed call went (``target``: its decision, the decision's ``id`` from the
        call's record, or the prompt); see :func:`shared_core.feedback.record_feedback`."""
        return self.engine.record_feedback(target, outcome, store=store)

    # Changing settings ------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name in ROUTING_FIELDS:
            self._update_routing({name: value})
        else:
            super().__setattr__(name, value)

    def _update_routing(self, changes: Mapping[str, Any]) -> None:
        """Validate ``changes`` with the rest of the settings, rebuild the engine if
        they touch it, then apply them; nothing changes if any of it fails."""
        with config_errors(type(self)):
            settings = RoutingSettings(**{**self.routing_values(), **changes})
        engine = settings.build_engine() if any(name in ENGINE_FIELDS for name in changes) else self._engine
        for name in changes:
            super().__setattr__(name, getattr(settings, name))
        self._engine = engine
        if "pin_threads" in changes:
            self._pins = ThreadPins(self.pin_threads) if self.pin_threads else None

    def model_copy(self, *, update: Optional[Mapping[str, Any]] = None, deep: bool = False) -> Any:
        update = dict(update or {})
        routing = {name: update.pop(name) for name in list(update) if name in ROUTING_FIELDS}
        copied = super().model_copy(update=update, deep=deep)
        if routing:
            copied._update_routing(routing)
        return copied

    # Copies and pickles -------------------------------------------------------------------------
    def __deepcopy__(self, memo: Optional[Dict[int, Any]] = None) -> Any:
        memo = {} if memo is None else memo
        for shared in (self._engine, self.router, self.controller, self._pins):
            if isinstance(shared, (RoutingEngine, Router, Controller, ThreadPins)):
                memo[id(shared)] = shared  # read-only: shared, not copied (a loaded model holds locks)
        return super().__deepcopy__(memo)

    def __getstate__(self) -> Dict[Any, Any]:
        # pydantic's state (not a framework's that drops what it cannot pickle):
        # everything but the engine, which is rebuilt from the settings.
        state = BaseModel.__getstate__(self)
        private = dict(state.get("__pydantic_private__") or {})
        private.pop("_engine", None)
        private.pop("_pins", None)  # pins are this process's memory: a pickle starts with none
        return {**state, "__pydantic_private__": private}

    def __setstate__(self, state: Dict[Any, Any]) -> None:
        BaseModel.__setstate__(self, state)
        object.__setattr__(self, "__pydantic_private__",
                           {**(self.__pydantic_private__ or {}), "_engine": None, "_pins": None})
        self._engine = self.build_engine()
        self._pins = ThreadPins(self.pin_threads) if self.pin_threads else None

    # Attempts -------------------------------------------------------------------------------
    def _attempts(
        self,
        decision: Decision,
        model_for: Callable[[Any], M],
        *,
        timeout: Optional[float] = None,
        name: Callable[[M], str] = model_label,
        on_failure: Optional[Callable[[Failure], None]] = None,
        view: Optional[Callable[[Any], AnswerView]] = None,
        context: Optional[CallContext] = None,
    ) -> Attempts[M]:
        """The attempt loop for ``decision``: the chosen role, then the other with
        ``fallback``; ``timeout`` overrides the field for one call.

        ``model_for`` gets a :class:`Role` (strong / weak) or, with a ladder, a
        rung index. With ``escalate_on`` and a ``view`` (the answer as
        :class:`~shared_core.escalation.AnswerView`; a stream's view reads the
        list of its chunks), a weak answer the checks reject goes to the strong
        model (a ladder: one rung up), the rejection recorded on the outcome.
        """
        ladder = self.engine.ladder
        if ladder is not None:
            keys = ladder.attempt_order(decision, self.fallback)  # type: ignore[arg-type]
            targets = ladder.escalation_targets(decision)  # type: ignore[arg-type]
            role_of: Callable[[Any], Role] = ladder.role
        else:
            keys = attempt_order(decision, self.fallback)
            targets = [Role.STRONG] if decision.role is Role.WEAK else []
            role_of = lambda key: key  # noqa: E731
        checks = AnswerChecks.from_spec(self.escalate_on) if view is not None else None
        if checks is None:
            targets = []
        entries = {key: (role_of(key), model_for(key)) for key in dict.fromkeys([*keys, *targets])}
        spend = self._spend(decision)
        check = None
        if checks is not None:
            call_context = context or CallContext()

            def check(role: Role, value: Any) -> Optional[str]:
                reason = checks.reason(view(value), call_context)
                # Under a budget an escalation is a strong call like any other: admitted by the budget,
                # or the weak answer stands (the record says so).
                return reason if reason is None or spend is None or spend.admit_escalation(reason) else None

        attempts = Attempts(
            [entries[k] for k in keys], fallback_on=self.fallback_on,
            timeout=self.timeout if timeout is None else timeout, name=name, on_failure=on_failure,
            check=check, escalate_to=[entries[k] for k in targets],
            on_strong_failure=None if spend is None else spend.release,
        )
        attempts.keys = {id(model): key for key, (_, model) in entries.items()}
        attempts.spend = spend
        return attempts

    def _spend(self, decision: Decision) -> Optional[Reservations]:
        """A call's reservations under a :class:`~shared_core.controller.BudgetController`
        (``None`` without one, and for a ladder's decision, which it does not control)."""
        budget = self.engine.controller
        if not isinstance(budget, BudgetController) or isinstance(decision, LadderDecision):
            return None
        return Reservations(budget, decision)

    # Models by key ------------------------------------------------------------------------
    def _member(self, key: Any) -> Any:
        """The model for a key of the attempt plan: a role, or a ladder's rung index."""
        if isinstance(key, Role):
            return getattr(self, key.value)
        return self.ladder[key][0]  # type: ignore[index]

    def _members(self) -> list[tuple[str, Any]]:
        """``(label, model)`` of every model a call may go to: strong and weak, or each rung."""
        if self.ladder is not None:
            return [(f"rung{i}", rung[0]) for i, rung in enumerate(self.ladder)]
        return [("strong", getattr(self, "strong")), ("weak", getattr(self, "weak"))]

    @staticmethod
    def _key_label(key: Any) -> str:
        return key.value if isinstance(key, Role) else f"rung{key}"

    @staticmethod
    def _decision_key(decision: Any) -> Any:
        return decision.rung if isinstance(decision, LadderDecision) else decision.role

    def _record(self, decision: Decision, attempts: Attempts[Any], outcome: Outcome[Any],
                usage: Optional[Callable[[Any], Any]] = None) -> Dict[str, Any]:
        """The decision record of a call (:func:`~shared_core.engine.outcome_record`);
        with a ladder also ``answered_rung``, the rung of the model that answered; and
        ``escalation_refused`` when a check rejected the weak answer but the budget was
        spent (the weak answer stands), as the server records it."""
        record = outcome_record(decision, outcome, usage)
        if self.engine.ladder is not None:
            record["answered_rung"] = attempts.keys.get(id(outcome.model))
        spend = getattr(attempts, "spend", None)
        if spend is not None and spend.refused is not None:
            record["escalation_refused"] = dict(spend.refused)
        return record

    # Conversations ------------------------------------------------------------------------
    def _pinned(self, thread_id: Any) -> Optional[Decision]:
        """The decision for a call of a pinned thread, or ``None`` (decide as usual)."""
        if self._pins is None:  # pinning off: any thread id passes unchecked
            return None
        thread_id = check_thread_id(thread_id)
        if thread_id is None:
            return None
        key = self._pins.get(thread_id)
        return None if key is None else self.engine.pinned(key)

    def _pin(self, thread_id: Any, decision: Decision, attempts: Attempts[Any], outcome: Optional[Outcome[Any]]) -> None:
        """Pin a thread to the model its first call was routed to; an escalated
        answer moves the pin to the model that gave it (``attempts`` made ``outcome``)."""
        if self._pins is None:
            return
        thread_id = check_thread_id(thread_id)
        if thread_id is None:
            return
        key = self._decision_key(decision)
        if outcome is not None and outcome.escalations:
            self._pins.pin(thread_id, attempts.keys.get(id(outcome.model), key))
        else:
            self._pins.pin_first(thread_id, key)


def ladder_ends(strong: Any, weak: Any, kwargs: Mapping[str, Any], check: Callable[[str, Any], None]) -> tuple[Any, Any]:
    """``(strong, weak)`` of a wrapper: as given, or, with ``ladder=`` in ``kwargs``,
    its top and bottom rungs' models (then strong and weak must not be given).
    ``check(label, model)`` refuses a model the wrapper cannot call."""
    ladder = kwargs.get("ladder")
    if ladder is None:
        for label, model in (("strong", strong), ("weak", weak)):
            check(label, model)
        return strong, weak
    if strong is not None or weak is not None:
        raise ConfigError("give either strong and weak, or a ladder (whose top and bottom rungs play them), not both")
    rungs = RoutingSettings._check_ladder(ladder)  # noqa: SLF001 - the one shape check
    for i, rung in enumerate(rungs or []):
        check(f"ladder[{i}] model", rung[0])
    return rungs[-1][0], rungs[0][0]  # type: ignore[index]


def pop_timeout(kwargs: Dict[str, Any]) -> Optional[float]:
    """Take a per-call ``timeout`` out of call keyword arguments (validated)."""
    return check_timeout(kwargs.pop("timeout", None))

