"""Every test tier runs offline: one socket policy for the whole suite.

* By default sockets are disabled (unix sockets stay allowed: asyncio and
  multiprocessing use them).
* A test that talks to a real HTTP server on this machine says so: marked ``server``
  (the local SmolLM2 server), ``enable_socket`` (a notebook kernel), or
  ``allow_hosts([...])`` naming loopback addresses only; it may then connect to
  loopback and nowhere else. A marker naming any other host fails the test.
* The server tests (``tests/server``) mark their whole directory loopback-only.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from pytest_socket import disable_socket, enable_socket, socket_allow_hosts

LOOPBACK = ("127.0.0.1", "::1", "localhost")
_LOOPBACK_DIRS = (Path(__file__).resolve().parent / "server",)


def _loopback_hosts(node: pytest.Item) -> list[str] | None:
    """The hosts a test may reach (loopback only), or ``None`` for no sockets at all."""
    marker = node.get_closest_marker("allow_hosts")
    if marker is not None:
        hosts = marker.args[0] if marker.args else []
        hosts = hosts.split(",") if isinstance(hosts, str) else list(hosts)
        if not hosts or not set(hosts) <= set(LOOPBACK):
            pytest.fail(f"tests may only connect to loopback, but allow_hosts names {hosts!r}")
        return hosts
    if node.get_closest_marker("server") or node.get_closest_marker("enable_socket"):
        return list(LOOPBACK)
    if any(d in Path(str(node.fspath)).resolve().parents for d in _LOOPBACK_DIRS):
        return list(LOOPBACK)
    return None


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest):
    hosts = _loopback_hosts(request.node)
    connect = socket.socket.connect  # socket_allow_hosts patches it; enable_socket does not restore it
    if hosts is None:
        disable_socket(allow_unix_socket=True)
    else:
        socket_allow_hosts(hosts, allow_unix_socket=True)
    try:
        yield
    finally:
        enable_socket()
        socket.socket.connect = connect


@pytest.fixture(autouse=True)
def _server_logging_undone():
    """A test that runs ``routellm serve``'s CLI sets up its logging (a handler on the stderr
    pytest captures for that test, no propagation); undone after the test, so that a later
    test's server log records neither go to that closed stream nor miss ``caplog``."""
    logger = logging.getLogger("shared_core.server")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
