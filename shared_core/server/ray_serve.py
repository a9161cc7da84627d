"""The routing server as a Ray Serve deployment (``routellm serve --ray``).

The same FastAPI app as ``routellm serve`` (:func:`shared_core.server.app.create_app`),
built inside each replica (``__serve_build_asgi_app__``), so the router is loaded
once per replica and never shipped through Ray. Replicas read their settings
the way a uvicorn worker does: the flags and config-file path handed to the
deployment, and their own environment for the upstream keys and client tokens,
so that no secret is stored in Ray's cluster state. On a cluster, set
``ROUTELLM_STRONG_API_KEY`` / ``ROUTELLM_WEAK_API_KEY`` on its nodes.

Needs the ``ray`` extra (``pip install "routellm-integrations[server,ray]"``).

The share controller and the strong budget (``target_strong_share``,
``strong_budget``) keep their state in one process, and each replica would hold its
own: they are refused here. Prices and escalation hold no state and work as with
uvicorn (metrics per replica).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Mapping, Optional

from shared_core.errors import ConfigError


def _serve():
    try:
        from ray import serve
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"Ray Serve is not installed ({exc}); pip install \"routellm-integrations[server,ray]\""
        ) from exc
    return serve


def check_controls(config: Any) -> None:
    """Refuse the settings that keep state in one process (each replica would have its own)."""
    given = config.per_process_controls()
    if given:
        raise ConfigError(
            f"{given[0]} keeps its state in one process, and on Ray Serve each replica would hold its own (a budget "
            "once per replica); serve it without --ray, with one worker"
        )


def build_deployment(flags: Mapping[str, Any], config_file: Optional[str] = None, replicas: int = 1):
    """A bound Ray Serve application serving the routing app on ``replicas`` replicas."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError(f"replicas must be a positive integer, got {replicas!r}")
    serve = _serve()

    @serve.deployment(name="routellm", num_replicas=replicas, max_ongoing_requests=1000)
    @serve.ingress()
    class RouteLLMServer:
        def __init__(self, flags: dict[str, Any], config_file: Optional[str]) -> None:
            self._flags, self._config_file = flags, config_file

        def __serve_build_asgi_app__(self):
            from shared_core.server.app import create_app
            from shared_core.server.config import load_config

            config = load_config(self._flags, config_file=self._config_file)
            check_controls(config)
            return create_app(config)

    return RouteLLMServer.bind(dict(flags), config_file)


def run(flags: Mapping[str, Any], config_file: Optional[str], host: str, port: int, replicas: int) -> None:
    """Start Ray Serve's HTTP proxy on ``host:port``, deploy the app and serve until
    SIGTERM or SIGINT; then shut the deployment down (and the local cluster, if
    this call started one). Joins the cluster ``RAY_ADDRESS`` names, else starts a
    local one."""
    serve = _serve()
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        from shared_core.server.config import is_loopback

        # A local cluster for a loopback server keeps Ray's own ports on loopback too.
        local = {"_node_ip_address": "127.0.0.1"} if is_loopback(host) and not os.environ.get("RAY_ADDRESS") else {}
        ray.init(include_dashboard=False, log_to_driver=False, **local)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_deployment(flags, config_file, replicas), name="routellm", route_prefix="/")
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve.shutdown()
        if started_ray:
            ray.shutdown()
