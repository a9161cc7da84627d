"""Router registry by RouteLLM's names, and loading of saved routers.

``ROUTERS`` maps a name to its class: RouteLLM's names (``random``, ``mf``,
``sw_ranking``, ``bert``, ``causal_llm``) and this package's others.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable, TypeVar

from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers.base import Decision, Role, Router, check_prompts, check_threshold
from shared_core.routers.random import RandomRouter

__all__ = [
    "ROUTERS",
    "Decision",
    "RandomRouter",
    "Role",
    "Router",
    "check_prompts",
    "check_threshold",
    "get_router_class",
    "load_router",
    "register_router",
]

R = TypeVar("R", bound=type[Router])

ROUTERS: dict[str, type[Router]] = {"random": RandomRouter}
#: RouteLLM names that have no implementation here yet.
RESERVED: dict[str, str] = {}
#: Modules that register routers when imported.
BUILTIN_MODULES = ("mf", "sw_ranking", "knn", "ensemble", "adaptive_ensemble", "irt", "feedback")
#: Fine-tuned routers (torch + transformers, the ``finetune`` extra); registered on
#: import like the others, listed apart so that evaluating "every router" does not
#: fine-tune a transformer unasked.
FINETUNED_MODULES = ("bert", "causal_llm")


def register_router(cls: R) -> R:
    """Class decorator: add ``cls`` to :data:`ROUTERS` under ``cls.name``."""
    ROUTERS[cls.name] = cls
    return cls


def _load_builtin_routers() -> None:
    # Imported lazily so that ``import shared_core`` stays cheap (no torch).
    for module in BUILTIN_MODULES + FINETUNED_MODULES:
        try:
            importlib.import_module(f"shared_core.routers.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"shared_core.routers.{module}":
                raise


def get_router_class(name: str) -> type[Router]:
    """The router class registered as ``name``; raises naming the known names."""
    if not isinstance(name, str):
        raise ConfigError(f"router name must be a string, got {type(name).__name__}: {name!r}")
    if name not in ROUTERS:
        _load_builtin_routers()
    if name in ROUTERS:
        return ROUTERS[name]
    if name in RESERVED:
        raise ConfigError(f"router {name!r} is a RouteLLM router not available here yet ({RESERVED[name]})")
    known = ", ".join(sorted(ROUTERS))
    raise ConfigError(f"unknown router {name!r}; expected one of: {known}")


def read_config(path: str | Path) -> dict:
    """Read and check ``config.json`` of a saved router directory."""
    directory = Path(path)
    if not directory.is_dir():
        raise ArtifactError(f"router directory {str(directory)!r} does not exist or is not a directory")
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise ArtifactError(f"router directory {str(directory)!r} has no config.json")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{str(cfg_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{str(cfg_path)!r} must hold a JSON object, got {type(config).__name__}")
    return config


def config_label(config: dict, path: str | Path) -> str | None:
    """The saved ``"label"`` of a router config (``None`` if absent); :class:`ArtifactError` if it is not a name."""
    label = config.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ArtifactError(f"{str(Path(path) / 'config.json')!r}: 'label' must be a non-empty string, got {label!r}")
    return label


def load_router(path: str | Path, **kwargs) -> Router:
    """Load a router saved with ``Router.save`` (or a RouteLLM mf checkpoint).

    The router class is read from ``config.json``'s ``"router"`` key; a RouteLLM
    checkpoint (no such key, but ``num_models``/``text_dim``) loads as ``mf``.
    Extra keyword arguments go to the class's ``from_pretrained`` (for example an
    ``embedder`` for RouteLLM checkpoints).
    """
    config = read_config(path)
    name = config.get("router")
    if name is None and {"num_models", "text_dim"} <= set(config):
        name = "mf"
    if name is None:  # a Hugging Face model directory (RouteLLM's bert / causal_llm layout)
        from shared_core.routers._finetuned import hf_layout

        name = hf_layout(config)
    if not isinstance(name, str):
        raise ArtifactError(f"{str(Path(path) / 'config.json')!r} has no 'router' name (got {name!r})")
    cls = get_router_class(name)
    loader: Callable[..., Router] | None = getattr(cls, "from_pretrained", None)
    if loader is None:
        raise ArtifactError(f"router {name!r} in {str(path)!r} cannot be loaded from a directory")
    label = config_label(config, path)
    router = loader(path, **kwargs)
    if label is not None:
        router.label = label
    return router
