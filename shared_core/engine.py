"""The routing engine the integrations share: router + threshold + message policy.

Both wrappers build one :class:`RoutingEngine` from their settings and call
:meth:`RoutingEngine.decide` with conversations converted to ``(role, content)``
pairs. Everything about *how* a call is routed lives here, so that LangChain and
LlamaIndex make the same decision for the same question and configuration.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from shared_core.attempts import Escalation, Failure, Outcome
from shared_core.controller import Controller
from shared_core.cache import trained_router_dir
from shared_core.errors import ConfigError, PromptError
from shared_core.feedback import DecisionLog, record_feedback
from shared_core.policy import check_route_on, routing_text
from shared_core.routers import Decision, Role, Router, check_prompts, check_threshold, get_router_class, load_router
from shared_core.routers.base import NEVER_STRONG, check_prompt
from shared_core.thresholds import calibrate, check_fraction, end_threshold, threshold_from_quantiles

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_ROUTER = "default"
#: Used when neither a threshold nor a strong fraction is given.
DEFAULT_STRONG_FRACTION = 0.5

_MODEL_STRING = re.compile(r"^router-(?P<name>[A-Za-z0-9_]+)-(?P<thr>[0-9]*\.?[0-9]+(?:[eE]-?[0-9]+)?)$")


def parse_model_string(model: str) -> tuple[str, float]:
    """Split RouteLLM's ``router-<name>-<threshold>`` model string, e.g. ``router-mf-0.11593``."""
    if not isinstance(model, str):
        raise ConfigError(f"model string must be a string, got {type(model).__name__}: {model!r}")
    match = _MODEL_STRING.match(model.strip())
    if not match:
        raise ConfigError(
            f"invalid RouteLLM model string {model!r}; expected 'router-<router>-<threshold>', "
            "for example 'router-mf-0.11593'"
        )
    return match["name"], check_threshold(float(match["thr"]))


def is_model_string(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("router-") and bool(_MODEL_STRING.match(value.strip()))


#: ``{"default": "<shipped router>"}``: names that stand for a shipped router (not copies of it).
ALIASES_FILE = "aliases.json"


def shipped_aliases() -> dict[str, str]:
    """Alias -> shipped router name, from ``checkpoints/aliases.json`` (targets that exist only)."""
    path = CHECKPOINTS / ALIASES_FILE
    try:
        aliases = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(aliases, dict):
        return {}
    return {
        str(k): v for k, v in aliases.items()
        if isinstance(v, str) and (CHECKPOINTS / v / "config.json").is_file()
    }


def shipped_router_names() -> list[str]:
    """Names of the router checkpoints shipped inside the package, aliases (``default``) included."""
    if not CHECKPOINTS.is_dir():
        return []
    names = {p.name for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file()}
    return sorted(names | set(shipped_aliases()))


def resolve_router(spec: str | Path | Router | None = None, **kwargs: Any) -> Router:
    """Turn a router setting into a router object.

    * ``None`` or ``"default"``: the router shipped as the package default (an alias of
      one of the shipped routers, named in ``checkpoints/aliases.json``);
    * a :class:`Router`: used as it is;
    * ``"random"``: a seeded random router;
    * another registry name (``"mf"``, ``"sw_ranking"``, ...): the checkpoint of
      that name shipped in the package, else one trained into the cache directory
      (``<cache>/routers/<name>``, e.g. ``bert`` after ``routellm train bert --recipe``);
    * a path to a directory saved with ``Router.save`` (or a RouteLLM checkpoint).
    """
    if isinstance(spec, Router):
        return spec
    if spec is None:
        spec = DEFAULT_ROUTER
    if isinstance(spec, Path) or (isinstance(spec, str) and ("/" in spec or spec.startswith("."))):
        return load_router(Path(spec), **kwargs)
    if not isinstance(spec, str):
        raise ConfigError(
            f"router must be a registry name, a path or a Router object, got {type(spec).__name__}: {spec!r}"
        )
    if spec == "random":
        return get_router_class("random")(**kwargs)
    spec = shipped_aliases().get(spec, spec)
    shipped = CHECKPOINTS / spec
    if (shipped / "config.json").is_file():
        if not kwargs:
            return _load_shipped(spec)
        router = load_router(shipped, **kwargs)
        router.label = spec  # the name it answers to (adaptive_ensemble_l3, not its kind adaptive_ensemble)
        return router
    if spec != DEFAULT_ROUTER:
        get_router_class(spec)  # raises for unknown names
        trained = trained_router_dir(spec)
        if (trained / "config.json").is_file():  # trained into the cache by `routellm train <name> --recipe`
            router = _load_trained(str(trained), (trained / "config.json").stat().st_mtime_ns, **kwargs)
            router.label = spec
            return router
        raise ConfigError(
            f"router {spec!r} needs trained weights and none ship under that name "
            f"(shipped: {', '.join(shipped_router_names()) or 'none'}) or are in {str(trained)!r}; train one with "
            f"'routellm train {spec} --recipe -o {trained}' (found there by name) or pass a directory"
        )
    raise ConfigError(f"the package's default router is missing from {str(shipped)!r}; reinstall the package")


def _load_trained(path: str, mtime_ns: int, **kwargs: Any) -> Router:
    # Fine-tuned routers take seconds to load: once per process and version of the file.
    return load_router(Path(path), **kwargs) if kwargs else _load_trained_cached(path, mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_trained_cached(path: str, mtime_ns: int) -> Router:
    return load_router(Path(path))


@functools.lru_cache(maxsize=8)
def _load_shipped(name: str) -> Router:
    # Shipped checkpoints are read-only package files: load each once per process,
    # so that building many wrappers (or one per request) costs no reload.
    router = load_router(CHECKPOINTS / name)
    router.label = name
    return router


def attempt_order(decision: Decision, fallback: bool) -> list[Role]:
    """The roles to try for a decision: the chosen one, then the other if ``fallback``."""
    other = Role.WEAK if decision.role is Role.STRONG else Role.STRONG
    return [decision.role, other] if fallback else [decision.role]


def decision_record(
    decision: Decision,
    role: Role,
    model: str,
    failures: Sequence[Failure] = (),
    escalations: Sequence[Escalation] = (),
    usage: Sequence[Any] = (),
) -> dict[str, Any]:
    """The decision as every integration records it on a response.

    ``role`` and ``model`` name what answered (they differ from the router's
    choice only after a fallback); ``score``, ``threshold``, ``router`` and
    ``reason`` are the router's decision; ``failures`` lists each model that
    failed before the answer (``role``, ``model``, ``error``), in the order
    tried (an :class:`~shared_core.attempts.Outcome`'s ``failures``), and
    ``fallback`` is ``None`` or the first of them as ``from``/``model``/``error``;
    ``id`` is the decision's id, for :meth:`RoutingEngine.record_feedback`.

    Only when an answer was rejected by the escalation checks
    (:mod:`shared_core.escalation`): ``escalations`` lists each rejected answer
    (``role``, ``model``, ``reason``, and ``usage`` when ``usage`` gives it, one
    entry per escalation) and ``escalated`` is the first as ``from``/``model``/``reason``.
    """
    failed = [f.to_dict() for f in failures]
    record = {**decision.to_dict(), "role": role.value, "model": model, "fallback": None, "failures": failed}
    record["id"] = decision.id  # what record_feedback(...) refers to
    if failed:
        first = failed[0]
        record["fallback"] = {"from": first["role"], "model": first["model"], "error": first["error"]}
    if escalations:
        rejected = rejected_records(escalations, usage)
        record["escalations"] = rejected
        record["escalated"] = {"from": rejected[0]["role"], "model": rejected[0]["model"],
                               "reason": rejected[0]["reason"]}
    return record


def rejected_records(escalations: Sequence[Escalation], usage: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Each rejected answer as records hold it: ``role``, ``model``, ``reason`` and, when
    ``usage`` gives it (one entry per escalation), ``usage``. A decision record's
    ``escalations`` are these, and so are those of a call that failed after a rejection
    (:func:`shared_core.attempts.rejected_answers`), which a ledger prices with
    :meth:`~shared_core.ledger.Ledger.record_unanswered`."""
    rejected = [e.to_dict() for e in escalations]
    for entry, used in zip(rejected, usage):
        if used is not None:
            entry["usage"] = dict(used)
    return rejected


def outcome_record(
    decision: Decision, outcome: Outcome[Any], usage: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """:func:`decision_record` for what an :class:`~shared_core.attempts.Attempts` loop returned;
    ``usage(value)`` reads the token usage of a rejected answer, for its record."""
    used = [usage(e.value) for e in outcome.escalations] if usage is not None else ()
    return decision_record(decision, outcome.role, outcome.model_name, outcome.failures, outcome.escalations, used)


class RoutingEngine:
    """A router with its threshold and the message policy of :mod:`shared_core.policy`.

    Build it with :meth:`from_settings`; give either ``threshold`` or
    ``strong_fraction`` (neither means ``strong_fraction=0.5``), or a RouteLLM
    model string as ``router`` (``"router-mf-0.11593"``), which carries both.
    """

    def __init__(
        self, router: Router, threshold: float, on_no_text: str = "strong", *, router_spec: str | Path | None = None,
        controller: Controller | None = None, route_on: str = "last_user", ladder: Any = None,
    ) -> None:
        self.router = router
        self.threshold = check_threshold(threshold)
        if on_no_text not in ("strong", "weak"):
            raise ConfigError(f"on_no_text must be 'strong' or 'weak', got {on_no_text!r}")
        self.on_no_text = Role(on_no_text)
        #: The name or path the router was loaded from (``None``: a Router object was given).
        self.router_spec = router_spec
        #: Moves the threshold online (:mod:`shared_core.controller`); ``None``: the threshold is fixed.
        self.controller = check_controller(controller)
        #: Which text is scored: ``"last_user"`` or ``"last_turn"`` (:func:`shared_core.policy.routing_text`).
        self.route_on = check_route_on(route_on)
        #: A :class:`~shared_core.ladder.Ladder` over the router's models, or ``None`` (strong / weak).
        self.ladder = ladder
        #: The routing texts of the latest decisions by id, for :meth:`record_feedback`.
        self.recent = DecisionLog()

    def __reduce__(self) -> tuple[Any, ...]:
        # A router loaded by name or path pickles as that name or path (a loaded
        # embedder holds sessions and locks); a Router object given pickles itself.
        rungs = None if self.ladder is None else [(r.name, r.threshold) for r in self.ladder.rungs]
        if self.router_spec is not None:
            return (_engine_from_spec, (self.router_spec, self.threshold, self.on_no_text.value, self.route_on, rungs,
                                        self.controller))
        return (_engine_from_router, (self.router, self.threshold, self.on_no_text.value, self.route_on, rungs,
                                      None, self.controller))

    @classmethod
    def from_settings(
        cls,
        router: str | Path | Router | None = None,
        threshold: float | None = None,
        strong_fraction: float | None = None,
        calibration_prompts: Sequence[str] | None = None,
        on_no_text: str = "strong",
        controller: Controller | None = None,
        route_on: str = "last_user",
        ladder: Sequence[tuple[str, float | None]] | None = None,
    ) -> "RoutingEngine":
        """The engine for these settings. ``ladder``: ``(name, threshold)`` rungs,
        cheapest first (:mod:`shared_core.ladder`), instead of a threshold."""
        if ladder is not None:
            if controller is not None:
                raise ConfigError("a ladder gives each rung its own threshold; a controller moves one threshold: "
                                  f"pass one of them, not both (got controller={controller!r})")
            if threshold is not None or strong_fraction is not None or is_model_string(router):
                raise ConfigError(
                    "a ladder gives each rung its own threshold; do not also pass threshold, strong_fraction "
                    f"or a RouteLLM model string (got threshold={threshold!r}, strong_fraction={strong_fraction!r}, "
                    f"router={router!r})"
                )
            spec = None if isinstance(router, Router) else (DEFAULT_ROUTER if router is None else router)
            return _engine_from_router(resolve_router(router), NEVER_STRONG, on_no_text, route_on, ladder,
                                       router_spec=spec)
        if threshold is not None and strong_fraction is not None:
            raise ConfigError(
                f"give either threshold ({threshold!r}) or strong_fraction ({strong_fraction!r}), not both"
            )
        if is_model_string(router):
            name, model_thr = parse_model_string(router)  # type: ignore[arg-type]
            if threshold is not None or strong_fraction is not None:
                raise ConfigError(
                    f"router {router!r} already carries threshold {model_thr}; do not also pass "
                    "threshold or strong_fraction"
                )
            router, threshold = name, model_thr
        spec = None if isinstance(router, Router) else (DEFAULT_ROUTER if router is None else router)
        if threshold is not None:
            thr = check_threshold(threshold)
            return cls(resolve_router(router), thr, on_no_text, router_spec=spec, controller=controller,
                       route_on=route_on)
        fraction = check_fraction(DEFAULT_STRONG_FRACTION if strong_fraction is None else strong_fraction)
        router_obj = resolve_router(router)
        return cls(router_obj, threshold_for_fraction(router_obj, fraction, calibration_prompts), on_no_text,
                   router_spec=spec, controller=controller, route_on=route_on)

    # Decisions -------------------------------------------------------------
    def decide_texts(
        self, texts: Sequence[str | None], reasons: Sequence[str] | None = None, *, skip_invalid: bool = False,
        observe: bool = True,
    ) -> list[Decision]:
        """Decide for each text; ``None`` entries (nothing to score) go to ``on_no_text``.

        All texts are scored in one router call. A text the router cannot read (not
        valid Unicode) raises :class:`~shared_core.errors.PromptError` naming it; with
        ``skip_invalid`` it gets ``None`` instead, so a batch can fail that item alone.
        With a ladder, the decisions are :class:`~shared_core.ladder.LadderDecision` objects.
        ``observe=False`` is for decisions no call follows (``route()``, token counting):
        a controller previews them (:meth:`~shared_core.controller.Controller.preview`)
        instead of counting them or reserving budget for them.
        """
        texts = list(texts)
        reasons = list(reasons) if reasons is not None else ["score" if t is not None else "no_text" for t in texts]
        invalid: set[int] = set()
        for i, t in enumerate(texts):
            if t is not None:
                try:
                    check_prompt(t, i)
                except PromptError as exc:
                    if not skip_invalid:
                        if len(texts) == 1:  # one call's prompt: no batch index to name
                            raise PromptError(str(exc).replace("prompts[0]", "the prompt", 1), index=0) from None
                        raise
                    invalid.add(i)
        if self.ladder is not None:
            valid = [i for i in range(len(texts)) if i not in invalid]
            laddered = self.ladder.decide_texts([texts[i] for i in valid], [reasons[i] for i in valid])
            decided: list[Any] = [None] * len(texts)
            for i, d in zip(valid, laddered):
                decided[i] = d
            return decided
        idx = [i for i, t in enumerate(texts) if t is not None and i not in invalid]
        scores = self.router.score([texts[i] for i in idx]) if idx else []
        if self.controller is not None:
            return self._controlled(texts, reasons, dict(zip(idx, scores)), invalid, observe)  # type: ignore[return-value]
        out: list[Decision | None] = [None] * len(texts)
        for i, s in zip(idx, scores):
            role = Role.STRONG if s >= self.threshold else Role.WEAK
            out[i] = Decision(role, float(s), self.threshold, self.router.label)
            self.recent.add(out[i].id, texts[i], float(s))
        for i, t in enumerate(texts):
            if t is None:
                out[i] = Decision(self.on_no_text, None, self.threshold, self.router.label, reasons[i])
        return out  # type: ignore[return-value]

    def _controlled(self, texts: list[str | None], reasons: list[str], scores: dict[int, float],
                    invalid: set[int], observe: bool = True) -> list[Decision | None]:
        """Decisions by the controller, which observes each one in the order given
        (an invalid item, skipped, gets ``None`` and is not observed)."""
        out: list[Decision | None] = []
        for i in range(len(texts)):
            if i in invalid:
                out.append(None)
                continue
            score = float(scores[i]) if i in scores else None
            ask = self.controller.decide if observe else self.controller.preview  # type: ignore[union-attr]
            c = ask(score, self.threshold, self.on_no_text, reasons[i])
            decision = Decision(c.role, score, c.threshold, self.router.label, c.reason)
            if score is not None:
                self.recent.add(decision.id, texts[i], score)
            out.append(decision)
        return out

    def decide(
        self, conversations: Sequence[Sequence[tuple[str, Any]]], *, skip_invalid: bool = False, observe: bool = True
    ) -> list[Decision]:
        """Decide for each conversation of ``(role, content)`` pairs, in one router call."""
        pairs = [routing_text(c, self.route_on) for c in conversations]
        return self.decide_texts([t for t, _ in pairs], [r for _, r in pairs], skip_invalid=skip_invalid,
                                 observe=observe)

    def decide_one(self, conversation: Sequence[tuple[str, Any]], *, observe: bool = True) -> Decision:
        return self.decide([conversation], observe=observe)[0]

    def pinned(self, key: Any) -> Decision:
        """The decision of a conversation pinned to ``key`` (a role, or a ladder's rung), nothing scored."""
        if self.ladder is not None:
            return self.ladder.pinned(key)  # type: ignore[return-value]
        return Decision(key, None, self.threshold, self.router.label, "pinned")

    def record_feedback(self, target: Decision | str, outcome: Any, *, store: Any = None) -> Any:
        """Record how a decision turned out; see :func:`shared_core.feedback.record_feedback`."""
        return record_feedback(self, target, outcome, store=store)

    def describe(self) -> dict[str, Any]:
        if self.ladder is not None:
            return self.ladder.describe()
        return {"router": self.router.label, "threshold": self.threshold}


def _engine_from_spec(router_spec: str | Path, threshold: float, on_no_text: str, route_on: str = "last_user",
                      ladder: Sequence[tuple[str, float | None]] | None = None,
                      controller: Controller | None = None) -> RoutingEngine:
    return _engine_from_router(resolve_router(router_spec), threshold, on_no_text, route_on, ladder,
                               router_spec=router_spec, controller=controller)


def _engine_from_router(router: Router, threshold: float, on_no_text: str, route_on: str = "last_user",
                        ladder: Sequence[tuple[str, float | None]] | None = None,
                        router_spec: str | Path | None = None, controller: Controller | None = None) -> RoutingEngine:
    rungs = None
    if ladder is not None:
        from shared_core.ladder import Ladder

        rungs = Ladder(router, ladder, on_no_text, route_on)
    return RoutingEngine(router, threshold, on_no_text, router_spec=router_spec, route_on=route_on, ladder=rungs,
                         controller=controller)


def check_controller(controller: Any) -> Controller | None:
    """``controller`` if it is ``None`` or a :class:`~shared_core.controller.Controller`, else raise."""
    if controller is None or isinstance(controller, Controller):
        return controller
    raise ConfigError(
        f"controller must be a ShareController, a BudgetController or None, got {type(controller).__name__}: "
        f"{controller!r}"
    )


def threshold_for_fraction(
    router: Router, strong_fraction: float, prompts: Sequence[str] | None = None
) -> float:
    """Threshold that sends ``strong_fraction`` of prompts to the strong model.

    Calibrated on ``prompts`` when given, else on the router's shipped reference
    quantiles; a router with neither (a freshly trained one) needs prompts. The
    ends need neither: 1 is ``ALWAYS_STRONG`` (0.0) and 0 is ``NEVER_STRONG``
    (just above 1.0, above every score), see :mod:`shared_core.thresholds`.
    """
    fraction = check_fraction(strong_fraction)
    if prompts is not None:
        prompts = check_prompts(prompts)  # checked even where the ends do not need them
    end = end_threshold(fraction)
    if end is not None:
        return end
    if prompts is not None:
        return calibrate(router.score(prompts), fraction).threshold
    quantiles = router.reference_quantiles
    if quantiles is None:
        raise ConfigError(
            f"router {router.label!r} ships no reference score quantiles, so strong_fraction="
            f"{strong_fraction!r} needs calibration prompts; pass calibration_prompts or a threshold"
        )
    return threshold_from_quantiles(quantiles, fraction)
