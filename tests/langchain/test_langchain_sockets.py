"""Tests allowed sockets (a local server, a notebook kernel) reach loopback only;
other tests get none (conftest.py's ``_no_network``)."""

from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


@pytest.mark.enable_socket
def test_loopback_tests_cannot_reach_another_host():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(SocketConnectBlockedError):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
    finally:
        sock.close()
