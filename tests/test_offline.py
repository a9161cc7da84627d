"""Every tier runs offline (tests/conftest.py): no sockets, or loopback only where marked."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pytest_socket import SocketBlockedError, SocketConnectBlockedError

# pytest-socket warns as well as raising; here the raise is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket")


def test_sockets_are_disabled():
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)  # TEST-NET-1: never reached


def test_unix_sockets_stay_allowed():
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close()
    b.close()


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_loopback_test_reaches_127_0_0_1_and_nothing_else():
    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5) as response:
            assert response.status == 204
        with pytest.raises(SocketConnectBlockedError):
            socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    finally:
        server.shutdown()
        server.server_close()


def _cannot_reach_another_host() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(SocketConnectBlockedError):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
    finally:
        sock.close()


@pytest.mark.enable_socket
def test_a_notebook_kernel_test_reaches_no_other_host():
    _cannot_reach_another_host()


@pytest.mark.server
def test_a_local_server_test_reaches_no_other_host():
    _cannot_reach_another_host()


def test_every_tier_shares_the_policy():
    """The langchain, llamaindex, server and shared_core tiers have no socket fixture of their own."""
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    for conftest in tests.glob("*/conftest.py"):
        text = conftest.read_text(encoding="utf-8")
        assert "disable_socket" not in text and "socket_allow_hosts" not in text, conftest
