"""Which engine a request's ``model`` names, and decisions batched across requests.

A request's ``model`` is the configured ``model_name`` (or absent): the engine
built from the server's settings; a configured alias: the engine of its RouteLLM
model string; or ``router-<router>-<threshold>``: that shipped router at that
threshold, built on first use and kept (registry names only: a client cannot
make the server load a directory).

Decisions go through :class:`DecisionBatcher`: requests that arrive while the
router is busy are scored together in its next call (the router contract is
batch-first), off the event loop, one router call at a time per engine. The
decision for a prompt is the one :meth:`RoutingEngine.decide` makes for it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

import anyio.to_thread

from shared_core.engine import RoutingEngine, is_model_string
from shared_core.errors import ConfigError
from shared_core.routers import Decision
from shared_core.server.protocol import APIError

#: Engines built for ``router-<name>-<threshold>`` model strings that are kept at once.
MAX_DYNAMIC_ENGINES = 32


class DecisionBatcher:
    """Decide for conversations of concurrent requests in shared router calls."""

    def __init__(self, engine: RoutingEngine, max_batch: int = 64) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._pending: list[tuple[Sequence[tuple[str, Any]], asyncio.Future]] = []
        self._worker: Optional[asyncio.Task] = None

    async def decide(self, conversation: Sequence[tuple[str, Any]]) -> Decision:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((conversation, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            batch = [(c, f) for c, f in batch if not f.done()]  # cancelled callers need no decision
            if not batch:
                continue
            try:
                decisions = await anyio.to_thread.run_sync(self.engine.decide, [c for c, _ in batch])
            except Exception:  # noqa: BLE001 - one bad conversation must not fail the others
                await self._one_by_one(batch)
                continue
            for (_, future), decision in zip(batch, decisions):
                if not future.done():
                    future.set_result(decision)

    async def _one_by_one(self, batch: list[tuple[Sequence[tuple[str, Any]], asyncio.Future]]) -> None:
        for conversation, future in batch:
            try:
                decision = await anyio.to_thread.run_sync(self.engine.decide_one, conversation)
            except Exception as exc:  # noqa: BLE001 - handed to the request that owns it
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(decision)


class ModelResolver:
    """Maps a request's ``model`` to a :class:`DecisionBatcher` over the right engine."""

    def __init__(self, default: RoutingEngine, model_name: str, aliases: dict[str, RoutingEngine],
                 on_no_text: str = "strong", no_model_strings: Optional[str] = None) -> None:
        self.model_name = model_name
        self.on_no_text = on_no_text
        #: Why ``router-<router>-<threshold>`` names are refused (``None``: they are served).
        self.no_model_strings = no_model_strings
        self._named = {model_name: DecisionBatcher(default), **{a: DecisionBatcher(e) for a, e in aliases.items()}}
        self._dynamic: dict[str, DecisionBatcher] = {}
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._named)

    def default(self) -> DecisionBatcher:
        return self._named[self.model_name]

    async def resolve(self, model: Optional[str]) -> DecisionBatcher:
        if model is None:
            return self.default()
        if model in self._named:
            return self._named[model]
        key = model.strip()
        if key in self._dynamic:
            return self._dynamic[key]
        if self.no_model_strings is not None and key.startswith("router-"):
            raise APIError(400, f"model {model!r} is not served here: {self.no_model_strings}; use one of "
                           f"{self.names}", param="model", code="model_not_allowed")
        if not is_model_string(key):
            if key.startswith("router-"):
                raise APIError(400, f"model {model!r} is not a RouteLLM model string; expected "
                               "'router-<router>-<threshold>' with a threshold in [0, 1], e.g. 'router-mf-0.116'",
                               param="model", code="invalid_model")
            raise APIError(404, f"the model {model!r} does not exist on this server; use one of "
                           f"{self.names} or 'router-<router>-<threshold>'", param="model", code="model_not_found")
        async with self._lock:
            if key not in self._dynamic:
                try:
                    engine = await anyio.to_thread.run_sync(self._build, key)
                except ConfigError as exc:
                    raise APIError(400, f"model {model!r}: {exc}", param="model", code="invalid_model") from None
                if len(self._dynamic) >= MAX_DYNAMIC_ENGINES:
                    self._dynamic.pop(next(iter(self._dynamic)))
                self._dynamic[key] = DecisionBatcher(engine)
            return self._dynamic[key]

    def _build(self, model_string: str) -> RoutingEngine:
        return RoutingEngine.from_settings(router=model_string, on_no_text=self.on_no_text)
