"""The OpenAI-compatible routing server (``routellm serve``), on FastAPI and uvicorn.

Needs the ``server`` extra (``pip install "routellm-integrations[server]"``).
:func:`create_app` builds the app from a :class:`ServerConfig`, which
:func:`load_config` reads from flags, environment variables and a config file.
Nothing is imported from FastAPI until :func:`create_app` is used.
"""

from __future__ import annotations

from typing import Any

from shared_core.server.config import ServerConfig, load_config

__all__ = ["ServerConfig", "create_app", "load_config"]


def create_app(*args: Any, **kwargs: Any):
    """See :func:`shared_core.server.app.create_app`."""
    from shared_core.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)
