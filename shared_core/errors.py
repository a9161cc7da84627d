"""Errors by cause, under one base class.

User misuse (a bad router name, a threshold outside [0, 1], an empty prompt list,
a broken artifact) is a ``ValueError`` subclass so that ``except ValueError`` works,
and every message names the bad value and what was expected.
"""

from __future__ import annotations


class RouteLLMError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RouteLLMError, ValueError):
    """A router, threshold, strong fraction or other setting is invalid."""


class ArtifactError(RouteLLMError, ValueError):
    """A saved router directory is missing, corrupt or does not match its embedder."""


class DataError(RouteLLMError, ValueError):
    """Training or evaluation data is missing columns, empty or malformed."""


class EmbeddingError(RouteLLMError, RuntimeError):
    """An embedder could not be loaded or did not return what was expected."""


class CacheError(RouteLLMError, OSError):
    """The embedding cache cannot be read or written where that was asked for explicitly."""


class PromptError(ConfigError):
    """One prompt of a batch cannot be routed (not a string, not valid Unicode text).

    ``index`` is its position in the batch, so a batch can fail that item alone.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
