"""shared_core: the routing engine behind langchain_routellm and llamaindex_routellm.

Routers score prompts with the strong model's predicted win rate (RouteLLM
semantics: strong when ``score >= threshold``). Nothing heavy runs at import.
"""

from shared_core.engine import RoutingEngine, parse_model_string, resolve_router
from shared_core.errors import ArtifactError, ConfigError, DataError, EmbeddingError, RouteLLMError
from shared_core.routers import Decision, Role, Router, get_router_class, load_router

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "Decision",
    "EmbeddingError",
    "Role",
    "RouteLLMError",
    "Router",
    "RoutingEngine",
    "get_router_class",
    "load_router",
    "parse_model_string",
    "resolve_router",
]
