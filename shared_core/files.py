"""Checks on the files a user names (prompt files, training data, labelled benchmarks).

One message for each way a path can be wrong, so that every command says the
same thing: a missing path "does not exist", a directory "is a directory, not a
file".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from shared_core.errors import ConfigError, DataError, RouteLLMError


def existing_file(path: str | Path, what: str, error: type[RouteLLMError] = ConfigError) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a readable file, else raise ``error``.

    ``what`` names the file in the message (``"prompt file"``, ``"data file"``).

    >>> existing_file(".", "prompt file")
    Traceback (most recent call last):
    ...
    shared_core.errors.ConfigError: prompt file '.' is a directory, not a file; name a file inside it
    """
    p = Path(path)
    if p.is_dir():
        raise error(f"{what} {str(p)!r} is a directory, not a file; name a file inside it")
    if not p.exists():
        raise error(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise error(f"{what} {str(p)!r} is not a regular file")
    return p


def json_lines(lines: Iterable[str], where: str | Path, error: type[RouteLLMError] = DataError,
               hint: str = "") -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` of each non-blank line of JSON-lines text; a line that
    is not JSON raises ``error`` naming the file ``where`` and the line (``hint`` added)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{str(where)!r} line {n} is not JSON: {exc}{hint}") from None


def jsonl_objects(lines: Iterable[str], where: str | Path, *, hint: str = "") -> list[dict[str, Any]]:
    """The JSON objects of JSON-lines text (blank lines skipped), or a :class:`DataError`
    naming the file ``where`` and the line; ``hint`` is added to that message."""
    rows = []
    for n, item in json_lines(lines, where, hint=hint):
        if not isinstance(item, dict):
            raise DataError(f"{str(where)!r} line {n}: expected a JSON object, got {type(item).__name__}{hint}")
        rows.append(item)
    return rows
