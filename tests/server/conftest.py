"""Server tests: real HTTP on loopback only (tests/conftest.py blocks every other address)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from server_support import STRONG_KEY, WEAK_KEY, KeywordRouter, ServerThread, StandIn  # noqa: E402
from shared_core.engine import RoutingEngine  # noqa: E402
from shared_core.server.app import create_app  # noqa: E402
from shared_core.server.config import load_config  # noqa: E402

@pytest.fixture(scope="session")
def _standins():
    """Both stand-in upstreams, started once; each test gets them reset."""
    pair = {role: StandIn(role) for role in ("strong", "weak")}
    threads = [ServerThread(s.app).start() for s in pair.values()]
    for s, thread in zip(pair.values(), threads):
        s.url = f"{thread.url}/v1"
    yield pair
    for thread in threads:
        thread.stop()


@pytest.fixture
def strong(_standins):
    _standins["strong"].reset()
    return _standins["strong"]


@pytest.fixture
def weak(_standins):
    _standins["weak"].reset()
    return _standins["weak"]


@pytest.fixture
def make_server(strong, weak):
    """``make_server(**settings)``: the routing server over the two stand-ins, with
    the keyword router at threshold 0.5 unless ``engine`` is given."""
    started: list[ServerThread] = []

    def make(engine=None, env=None, **settings):
        flags = {"strong_base_url": strong.url, "strong_model": "strong-model",
                 "weak_base_url": weak.url, "weak_model": "weak-model", **settings}
        env = {"ROUTELLM_STRONG_API_KEY": STRONG_KEY, "ROUTELLM_WEAK_API_KEY": WEAK_KEY, **(env or {})}
        config = load_config(flags, env=env)
        if engine is None:
            engine = RoutingEngine(KeywordRouter(), 0.5)
        thread = ServerThread(create_app(config, engine)).start()
        thread.url_v1 = f"{thread.url}/v1"
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()
