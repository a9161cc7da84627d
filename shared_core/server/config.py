"""The server's settings, read from flags, environment variables and a config file.

One flat set of names serves all three sources: the flag ``--strong-base-url``,
the file key ``strong_base_url`` and the variable ``ROUTELLM_STRONG_BASE_URL``
set the same field (see :data:`ENV_VARS` for every variable). Flags win over the
environment, which wins over the file. ``threshold``, ``strong_fraction`` and
``target_strong_share`` are one choice: the source that sets any of them decides,
and one source setting two of them is an error.

The cost controls (all opt-in, see ``docs/costs.md``):

* ``prices``: dollars per million input / output tokens by upstream model name, the
  shape :class:`shared_core.ledger.PriceTable` takes; the file's ``prices`` key is the
  table itself (or a path), ``--prices`` and ``ROUTELLM_SERVE_PRICES`` a path to a
  ``.json``/``.toml`` file holding it. Both models must be priced.
* ``target_strong_share`` (``controller_window``): a
  :class:`shared_core.controller.ShareController` instead of a fixed threshold.
* ``strong_budget`` dollars per ``budget_period`` seconds (``budget_reserve``): a
  :class:`shared_core.controller.BudgetController`; needs ``prices``.
  ``strong_max_output_tokens``, the most tokens the strong model can answer (its model
  card's maximum output), bounds a strong answer without usage whose request sets no
  max tokens (:func:`shared_core.server.protocol.token_bounds`).
* ``escalate_on``: names of :mod:`shared_core.escalation` checks (a list, or a
  comma-separated string).

``stream_usage`` (on by default) asks the upstream for every stream's usage
(``stream_options.include_usage``), so that streams are priced and charged whatever
the client sent; the client still gets only the usage it asked for. Turn it off for an
upstream that refuses ``stream_options``: requests then go upstream as the client sent them.

``strong_responses`` / ``weak_responses``: how that upstream serves ``POST /v1/responses``:
``"native"`` (the default: its own ``/responses``) or ``"chat"`` (it has chat completions
only, and the server translates: :mod:`shared_core.server.responses_chat`).

A controller and a budget live in one process: with ``workers`` above 1 they are
refused (each worker would hold its own budget).

Secrets never come from flags (they would show in ``ps``):

* the upstream keys come only from ``ROUTELLM_STRONG_API_KEY`` and
  ``ROUTELLM_WEAK_API_KEY``, and each is sent only to its own base URL;
* client bearer tokens come from ``ROUTELLM_SERVE_AUTH_TOKENS`` (comma-separated)
  or the file's ``auth_tokens`` list. With none, the server accepts loopback
  clients only and refuses to bind any other address.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from shared_core.controller import BudgetController, ShareController
from shared_core.engine import is_model_string, parse_model_string
from shared_core.errors import ConfigError
from shared_core.escalation import CHECK_NAMES, AnswerChecks
from shared_core.ledger import PriceTable

#: Field -> environment variable. Upstream settings share their names with ``routellm demo``.
ENV_VARS: dict[str, str] = {
    "strong_base_url": "ROUTELLM_STRONG_BASE_URL",
    "strong_model": "ROUTELLM_STRONG_MODEL",
    "weak_base_url": "ROUTELLM_WEAK_BASE_URL",
    "weak_model": "ROUTELLM_WEAK_MODEL",
    "router": "ROUTELLM_ROUTER",
    "threshold": "ROUTELLM_THRESHOLD",
    "strong_fraction": "ROUTELLM_STRONG_FRACTION",
    "host": "ROUTELLM_SERVE_HOST",
    "port": "ROUTELLM_SERVE_PORT",
    "workers": "ROUTELLM_SERVE_WORKERS",
    "model_name": "ROUTELLM_SERVE_MODEL_NAME",
    "fallback": "ROUTELLM_SERVE_FALLBACK",
    "upstream_timeout": "ROUTELLM_SERVE_UPSTREAM_TIMEOUT",
    "max_body_bytes": "ROUTELLM_SERVE_MAX_BODY_BYTES",
    "max_messages": "ROUTELLM_SERVE_MAX_MESSAGES",
    "log_prompts": "ROUTELLM_SERVE_LOG_PROMPTS",
    "shutdown_timeout": "ROUTELLM_SERVE_SHUTDOWN_TIMEOUT",
    "auth_tokens": "ROUTELLM_SERVE_AUTH_TOKENS",
    "prices": "ROUTELLM_SERVE_PRICES",
    "target_strong_share": "ROUTELLM_SERVE_TARGET_STRONG_SHARE",
    "controller_window": "ROUTELLM_SERVE_CONTROLLER_WINDOW",
    "strong_budget": "ROUTELLM_SERVE_STRONG_BUDGET",
    "budget_period": "ROUTELLM_SERVE_BUDGET_PERIOD",
    "budget_reserve": "ROUTELLM_SERVE_BUDGET_RESERVE",
    "strong_max_output_tokens": "ROUTELLM_SERVE_STRONG_MAX_OUTPUT_TOKENS",
    "escalate_on": "ROUTELLM_SERVE_ESCALATE_ON",
    "stream_usage": "ROUTELLM_SERVE_STREAM_USAGE",
    "strong_responses": "ROUTELLM_SERVE_STRONG_RESPONSES",
    "weak_responses": "ROUTELLM_SERVE_WEAK_RESPONSES",
}
#: The settings that are one choice of how the threshold is set (the highest source that sets one decides).
_THRESHOLD_CHOICE = ("threshold", "strong_fraction", "target_strong_share")
#: Settings that hold state in one process (refused with several workers or Ray replicas).
PER_PROCESS_CONTROLS = ("target_strong_share", "strong_budget")
#: The smallest controller window: the share controller looks at this many scores before it moves.
_MIN_WINDOW = ShareController.__init__.__kwdefaults__["min_scores"]
KEY_ENV_VARS = {"strong": "ROUTELLM_STRONG_API_KEY", "weak": "ROUTELLM_WEAK_API_KEY"}
CONFIG_FILE_ENV = "ROUTELLM_SERVE_CONFIG"
_SECRET_FIELDS = ("strong_api_key", "weak_api_key")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerConfig(BaseModel):
    """Everything ``routellm serve`` needs; build it with :func:`load_config`.

    ``aliases`` maps extra model names a client may send to RouteLLM model strings
    (``{"cheap": "router-mf-0.3"}``). ``model_name`` is the name of the configured
    router and threshold (a request without ``model`` gets it too).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strong_base_url: str
    strong_model: str
    weak_base_url: str
    weak_model: str
    router: Optional[str] = None
    threshold: Optional[float] = None
    strong_fraction: Optional[float] = None
    on_no_text: str = "strong"
    model_name: str = "routellm"
    aliases: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(default=6060, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    auth_tokens: tuple[SecretStr, ...] = ()
    fallback: bool = False
    upstream_timeout: float = Field(default=120.0, gt=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_messages: int = Field(default=1024, gt=0)
    max_upstream_connections: int = Field(default=512, gt=0)
    log_prompts: bool = False
    shutdown_timeout: float = Field(default=30.0, gt=0)
    prices: Optional[dict[str, Any]] = None
    target_strong_share: Optional[float] = Field(default=None, ge=0, le=1)
    controller_window: Optional[int] = Field(default=None, ge=_MIN_WINDOW)
    strong_budget: Optional[float] = Field(default=None, ge=0, allow_inf_nan=False)
    budget_period: Optional[float] = Field(default=None, gt=0, allow_inf_nan=False)
    budget_reserve: Optional[float] = Field(default=None, ge=0, allow_inf_nan=False)
    strong_max_output_tokens: Optional[int] = Field(default=None, gt=0)
    escalate_on: Optional[tuple[str, ...]] = None
    stream_usage: bool = True
    strong_responses: Literal["native", "chat"] = "native"
    weak_responses: Literal["native", "chat"] = "native"
    strong_api_key: Optional[SecretStr] = Field(default=None, exclude=True, repr=False)
    weak_api_key: Optional[SecretStr] = Field(default=None, exclude=True, repr=False)

    @field_validator("strong_base_url", "weak_base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("strong_model", "weak_model", "model_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty name")
        return value

    @field_validator("on_no_text")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("strong", "weak"):
            raise ValueError(f"must be 'strong' or 'weak', got {value!r}")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, target in value.items():
            if not is_model_string(target):
                raise ValueError(
                    f"alias {alias!r} must map to a RouteLLM model string such as 'router-mf-0.116', got {target!r}"
                )
            parse_model_string(target)
        return value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        return None if value is None else PriceTable(value).to_dict()  # PriceError names the bad entry

    @field_validator("escalate_on", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        if isinstance(value, (list, tuple)):
            names = CHECK_NAMES if tuple(value) == ("all",) else tuple(value)
            bad = [n for n in names if not isinstance(n, str)]
            if bad:
                raise ValueError(f"escalate_on takes check names, got {bad[0]!r}")
            AnswerChecks.from_spec(list(names))  # an unknown name fails here, naming the known ones
            return names
        raise ValueError(f"escalate_on must be check names (a list or a comma-separated string), got {value!r}")

    @model_validator(mode="after")
    def _consistent(self) -> "ServerConfig":
        chosen = [f"{name} ({getattr(self, name)!r})" for name in _THRESHOLD_CHOICE if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give either threshold, strong_fraction or target_strong_share, not {' and '.join(chosen)}")
        if is_model_string(self.router) and chosen:
            raise ValueError(f"router {self.router!r} already carries a threshold; do not also set {chosen[0]}")
        self._check_controls()
        reserved = {self.model_name} & set(self.aliases)
        if reserved:
            raise ValueError(f"alias {reserved.pop()!r} is also the model_name; pick another alias")
        if not self.auth_tokens and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address and no client tokens are configured; set "
                f"{ENV_VARS['auth_tokens']} (comma-separated) or auth_tokens in the config file, "
                "or bind 127.0.0.1"
            )
        return self

    def _check_controls(self) -> None:
        if self.prices is not None:
            table = PriceTable(self.prices)
            table.price(self.strong_model, "strong")
            table.price(self.weak_model, "weak")
        if self.target_strong_share is not None:
            self.share_controller()  # bad numbers fail here, in the controller's own words
        elif self.controller_window is not None:
            raise ValueError(f"controller_window ({self.controller_window!r}) is for target_strong_share; set it too")
        if self.strong_budget is None:
            given = [n for n in ("budget_period", "budget_reserve", "strong_max_output_tokens")
                     if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{given[0]} ({getattr(self, given[0])!r}) is for strong_budget; set it too")
        else:
            if self.prices is None:
                raise ValueError(
                    f"strong_budget ({self.strong_budget!r}) needs prices to charge strong answers at: give --prices "
                    f"FILE, ${ENV_VARS['prices']} or the config file's prices table"
                )
            if self.aliases:
                raise ValueError(
                    f"aliases ({', '.join(sorted(self.aliases))}) route with their own router, outside strong_budget; "
                    "remove them or the budget"
                )
            self.budget_controller()
        per_process = self.per_process_controls()
        if per_process and self.workers > 1:
            raise ValueError(
                f"{per_process[0]} keeps its state in one process, and with workers={self.workers} each worker would "
                f"hold its own (a budget {self.workers} times over); run one worker"
            )

    def per_process_controls(self) -> list[str]:
        """The settings given that keep their state in one process (:data:`PER_PROCESS_CONTROLS`)."""
        return [name for name in PER_PROCESS_CONTROLS if getattr(self, name) is not None]

    def share_controller(self) -> Optional[ShareController]:
        """A new strong-share controller for these settings (``None`` without ``target_strong_share``)."""
        if self.target_strong_share is None:
            return None
        window = {} if self.controller_window is None else {"window": self.controller_window}
        return ShareController(self.target_strong_share, **window)

    def budget_controller(self) -> Optional[BudgetController]:
        """A new budget controller (over a new share controller, if one is set), or ``None``."""
        if self.strong_budget is None:
            return None
        period = {} if self.budget_period is None else {"period": self.budget_period}
        return BudgetController(self.strong_budget, reserve=self.budget_reserve or 0.0, inner=self.share_controller(),
                                **period)

    def controller(self) -> Optional[ShareController | BudgetController]:
        """The controller the configured engine decides with, or ``None`` (a fixed threshold)."""
        return self.budget_controller() or self.share_controller()

    def api_key(self, role: str) -> Optional[str]:
        secret = self.strong_api_key if role == "strong" else self.weak_api_key
        return None if secret is None else secret.get_secret_value()


def _read_table(path: str | Path, what: str) -> dict[str, Any]:
    """An object from a ``.json`` or ``.toml`` file; ``what`` names the file in errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ConfigError(f"{what} {str(p)!r}: TOML needs Python 3.11+; use a .json file") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{what} {str(p)!r} is not valid TOML: {exc}") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what} {str(p)!r} is not valid JSON: {exc}") from None
    else:
        raise ConfigError(f"{what} {str(p)!r}: expected a .json or .toml file")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold an object, got {type(data).__name__}")
    return data


def read_prices_file(path: str | Path) -> dict[str, Any]:
    """A price table from a ``.json`` or ``.toml`` file: model name -> ``[input, output]`` or
    ``{input = ..., output = ...}``, dollars per million tokens (checked by the config)."""
    return _read_table(path, "prices file")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a ``.json`` or ``.toml`` file (flat keys, the field names)."""
    data = _read_table(path, "config file")
    p = Path(path)
    secret = [k for k in _SECRET_FIELDS if k in data]
    if secret:
        raise ConfigError(
            f"config file {str(p)!r} sets {secret[0]!r}; upstream keys come only from "
            f"{KEY_ENV_VARS['strong']} / {KEY_ENV_VARS['weak']}"
        )
    return data


def _layer(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset values; a layer that sets threshold, strong_fraction or target_strong_share owns that choice."""
    return {k: v for k, v in values.items() if v is not None}


def _file_layer(config_file: str | Path) -> dict[str, Any]:
    """The config file's settings; a ``prices`` path in it is relative to the file."""
    layer = _layer(read_config_file(config_file))
    if isinstance(layer.get("prices"), str):
        layer["prices"] = Path(config_file).parent / layer["prices"]
    return layer


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> ServerConfig:
    """Merge defaults < config file < environment < flags into a :class:`ServerConfig`.

    ``flags`` maps field names to values (``None`` = not given); ``env`` defaults
    to ``os.environ``; ``config_file`` defaults to ``$ROUTELLM_SERVE_CONFIG``.
    """
    env = os.environ if env is None else env
    flags = _layer(flags or {})
    config_file = config_file if config_file is not None else env.get(CONFIG_FILE_ENV) or None
    layers = [
        _file_layer(config_file) if config_file else {},
        _layer({field: env.get(var) or None for field, var in ENV_VARS.items()}),
        flags,
    ]
    merged: dict[str, Any] = {}
    for layer in layers:
        if any(name in layer for name in _THRESHOLD_CHOICE):
            for name in _THRESHOLD_CHOICE:
                merged.pop(name, None)
            if "target_strong_share" not in layer:  # a threshold chosen above: no controller, nor its window
                merged.pop("controller_window", None)
        merged.update(layer)
    if isinstance(merged.get("prices"), (str, Path)):  # a flag, the environment or the file named a prices file
        merged["prices"] = read_prices_file(merged["prices"])
    for role, var in KEY_ENV_VARS.items():
        if env.get(var):
            merged[f"{role}_api_key"] = env[var]
    missing = [f for f in ("strong_base_url", "strong_model", "weak_base_url", "weak_model") if f not in merged]
    if missing:
        raise ConfigError(
            "missing setting(s) " + ", ".join(missing) + ": give --" + missing[0].replace("_", "-")
            + f", ${ENV_VARS[missing[0]]} or the config file key {missing[0]!r}"
        )
    try:
        return ServerConfig(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
            + ("" if not e["loc"] or e["loc"][0] in _SECRET_FIELDS or e["loc"][0] == "auth_tokens"
               else f" (got {e.get('input')!r})" if e["type"] != "value_error" else "")
            for e in exc.errors()
        )
        raise ConfigError(f"invalid server settings: {problems}") from None
