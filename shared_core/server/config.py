"""The server's settings, read from flags, environment variables and a config file.

One flat set of names serves all three sources: the flag ``--strong-base-url``,
the file key ``strong_base_url`` and the variable ``ROUTELLM_STRONG_BASE_URL``
set the same field (see :data:`ENV_VARS` for every variable). Flags win over the
environment, which wins over the file. ``threshold`` and ``strong_fraction`` are
one choice: the source that sets either decides, and one source setting both is
an error.

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
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from shared_core.engine import is_model_string, parse_model_string
from shared_core.errors import ConfigError

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
}
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

    @model_validator(mode="after")
    def _consistent(self) -> "ServerConfig":
        if self.threshold is not None and self.strong_fraction is not None:
            raise ValueError(
                f"give either threshold ({self.threshold!r}) or strong_fraction ({self.strong_fraction!r}), not both"
            )
        if is_model_string(self.router) and (self.threshold is not None or self.strong_fraction is not None):
            raise ValueError(f"router {self.router!r} already carries a threshold; do not also set one")
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

    def api_key(self, role: str) -> Optional[str]:
        secret = self.strong_api_key if role == "strong" else self.weak_api_key
        return None if secret is None else secret.get_secret_value()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a ``.json`` or ``.toml`` file (flat keys, the field names)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ConfigError(f"config file {str(p)!r}: TOML needs Python 3.11+; use a .json file") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid JSON: {exc}") from None
    else:
        raise ConfigError(f"config file {str(p)!r}: expected a .json or .toml file")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold an object of settings, got {type(data).__name__}")
    secret = [k for k in _SECRET_FIELDS if k in data]
    if secret:
        raise ConfigError(
            f"config file {str(p)!r} sets {secret[0]!r}; upstream keys come only from "
            f"{KEY_ENV_VARS['strong']} / {KEY_ENV_VARS['weak']}"
        )
    return data


def _layer(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset values; a layer that sets threshold or strong_fraction owns that choice."""
    return {k: v for k, v in values.items() if v is not None}


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
        _layer(read_config_file(config_file)) if config_file else {},
        _layer({field: env.get(var) or None for field, var in ENV_VARS.items()}),
        flags,
    ]
    merged: dict[str, Any] = {}
    for layer in layers:
        if "threshold" in layer or "strong_fraction" in layer:
            merged.pop("threshold", None)
            merged.pop("strong_fraction", None)
        merged.update(layer)
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
