"""Model names, model tables and the scoring pair, in one place.

Pairwise routers (``mf``, ``sw_ranking``) learn about many models and report the
win rate of one *strong* model over one *weak* model: the scoring pair. The same
model is spelled differently across data sets (arena-bench writes
``mistralai/Mixtral-8x7B-Instruct-v0.1``, RouteLLM's model table
``mixtral-8x7b-instruct-v0.1``), so names are compared by :func:`model_key`:
the part after the last ``/``, lower-cased. Every lookup goes through here.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from shared_core.errors import ArtifactError, ConfigError

DEFAULT_STRONG = "gpt-4-1106-preview"
DEFAULT_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"

#: RouteLLM's matrix-factorization model table (``MODEL_IDS`` in
#: ``routellm/routers/matrix_factorization/model.py``): row ``i`` of a published
#: checkpoint's ``P.weight`` belongs to ``ROUTELLM_MF_MODELS[i]``. The names are
#: the Chatbot Arena names, sorted.
ROUTELLM_MF_MODELS: tuple[str, ...] = (
    "RWKV-4-Raven-14B", "alpaca-13b", "chatglm-6b", "chatglm2-6b", "chatglm3-6b",
    "claude-1", "claude-2.0", "claude-2.1", "claude-instant-1", "codellama-34b-instruct",
    "deepseek-llm-67b-chat", "dolly-v2-12b", "dolphin-2.2.1-mistral-7b", "falcon-180b-chat",
    "fastchat-t5-3b", "gemini-pro", "gemini-pro-dev-api", "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-0314", "gpt-3.5-turbo-0613", "gpt-3.5-turbo-1106", "gpt-4-0125-preview",
    "gpt-4-0314", "gpt-4-0613", "gpt-4-1106-preview", "gpt4all-13b-snoozy", "guanaco-33b",
    "koala-13b", "llama-13b", "llama-2-13b-chat", "llama-2-70b-chat", "llama-2-7b-chat",
    "llama2-70b-steerlm-chat", "mistral-7b-instruct", "mistral-7b-instruct-v0.2",
    "mistral-medium", "mixtral-8x7b-instruct-v0.1", "mpt-30b-chat", "mpt-7b-chat",
    "nous-hermes-2-mixtral-8x7b-dpo", "oasst-pythia-12b", "openchat-3.5", "openchat-3.5-0106",
    "openhermes-2.5-mistral-7b", "palm-2", "pplx-70b-online", "pplx-7b-online", "qwen-14b-chat",
    "qwen1.5-4b-chat", "qwen1.5-72b-chat", "qwen1.5-7b-chat", "solar-10.7b-instruct-v1.0",
    "stablelm-tuned-alpha-7b", "starling-lm-7b-alpha", "stripedhyena-nous-7b", "tulu-2-dpo-70b",
    "vicuna-13b", "vicuna-33b", "vicuna-7b", "wizardlm-13b", "wizardlm-70b", "yi-34b-chat",
    "zephyr-7b-alpha", "zephyr-7b-beta",
)  # fmt: skip


def model_key(name: Any) -> str:
    """The comparison key of a model name: after the last ``/``, stripped, lower-cased."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a model name must be a non-empty string, got {name!r}")
    return name.strip().rsplit("/", 1)[-1].lower()


def same_model(a: str, b: str) -> bool:
    return model_key(a) == model_key(b)


def same_pair(pair: tuple[str, str], other: tuple[str, str]) -> bool:
    """Whether two (strong, weak) pairs name the same models in the same roles."""
    return all(model_key(a) == model_key(b) for a, b in zip(pair, other))


def model_table(names: Iterable[Any], *, error: type[Exception] = ConfigError) -> list[str]:
    """Check a model table: non-empty strings, no two naming the same model."""
    table: list[str] = []
    seen: dict[str, str] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise error(f"model table entry {i} must be a non-empty string, got {name!r}")
        key = model_key(name)
        if key in seen:
            raise error(f"model table names the same model twice: {seen[key]!r} and {name!r}")
        seen[key] = name
        table.append(name)
    if not table:
        raise error("the model table is empty")
    return table


def unique_models(names: Iterable[str]) -> list[str]:
    """Distinct models in first-seen order, aliases merged (first spelling kept)."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(model_key(name), name)
    return list(seen.values())


def model_index(table: Sequence[str], name: str, *, role: str = "model") -> int:
    """Position of ``name`` in ``table`` (aliases match); raises naming the table."""
    key = model_key(name)
    for i, entry in enumerate(table):
        if model_key(entry) == key:
            return i
    shown = ", ".join(table[:20]) + (f", ... ({len(table)} models)" if len(table) > 20 else "")
    raise ConfigError(f"{role} {name!r} is not in the router's model table: {shown}")


def scoring_pair(table: Sequence[str], strong: str, weak: str) -> tuple[int, int]:
    """Indices of the strong and the weak model in ``table``; they must differ."""
    s = model_index(table, strong, role="strong model")
    w = model_index(table, weak, role="weak model")
    if s == w:
        raise ConfigError(f"strong model {strong!r} and weak model {weak!r} are the same model")
    return s, w


def check_pair_config(config: dict, path: str) -> tuple[list[str], str, str]:
    """Model table and scoring pair from a saved router's config, as ArtifactErrors."""
    table = model_table(config.get("models") or [], error=ArtifactError)
    pair = config.get("scoring_pair") or {}
    strong, weak = pair.get("strong"), pair.get("weak")
    if not isinstance(strong, str) or not isinstance(weak, str):
        raise ArtifactError(f"{path!r}: config 'scoring_pair' must name 'strong' and 'weak', got {pair!r}")
    try:
        scoring_pair(table, strong, weak)
    except ConfigError as exc:
        raise ArtifactError(f"{path!r}: {exc}") from None
    return table, strong, weak
