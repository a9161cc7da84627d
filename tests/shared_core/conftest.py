"""shared_core tests run offline, with sockets disabled, in every tier.

Unix sockets stay allowed (asyncio and multiprocessing use them). A test that
talks to a stand-in HTTP server on 127.0.0.1 says so with pytest-socket's marker,
``@pytest.mark.allow_hosts(["127.0.0.1"])``: sockets are then allowed, and
connections go to loopback only. A marker naming any other host fails the test.
"""

from __future__ import annotations

import pytest
from pytest_socket import disable_socket, enable_socket

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest):
    marker = request.node.get_closest_marker("allow_hosts")
    if marker is not None:
        hosts = marker.args[0] if marker.args else []
        hosts = hosts.split(",") if isinstance(hosts, str) else list(hosts)
        if not hosts or not set(hosts) <= LOOPBACK:
            pytest.fail(f"shared_core unit tests may only connect to loopback, but allow_hosts names {hosts!r}")
        yield  # pytest-socket restricts connect() to these hosts for this test
        return
    disable_socket(allow_unix_socket=True)
    yield  # teardown runs whatever the outcome
    enable_socket()
