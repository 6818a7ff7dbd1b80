"""The dashboard: flows, their atoms, failures and waits, jobs and conductors, reconciled resources, in a browser.

::

    pip install 'flowkit[web]'
    flowkit web --backend sqlite:///flowkit.db [--board URL] [--host 127.0.0.1] [--port 8080]

or, in a program of your own, serve :func:`create_app` with any ASGI server::

    import uvicorn
    from flowkit.persistence.backends import fetch
    from flowkit.web import create_app

    uvicorn.run(create_app(fetch({"connection": url, "read_only": True})), port=8080)

The pages are rendered on the server (Starlette and Jinja2, no script in the
browser); ``/api/...`` answers the same data as JSON.  It is read-only unless
started with actions allowed, behind a token; see ``doc/web.rst``.

Starlette and Jinja2 are imported when :func:`create_app` is first asked for,
so ``flowkit.web.cli`` (the ``flowkit web`` command) loads without them and
can say which extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowkit.web._actions import ACTIONS
    from flowkit.web._app import SESSION_COOKIE, create_app
    from flowkit.web._model import INTERRUPTED, LIMITS

__all__ = [
    # the application
    "create_app",
    # what it shows and accepts
    "ACTIONS",
    "INTERRUPTED",
    "LIMITS",
    "SESSION_COOKIE",
]

_FROM = {
    "create_app": "flowkit.web._app",
    "ACTIONS": "flowkit.web._actions",
    "SESSION_COOKIE": "flowkit.web._app",
    "INTERRUPTED": "flowkit.web._model",
    "LIMITS": "flowkit.web._model",
}


def __getattr__(name: str) -> Any:
    import importlib

    module = _FROM.get(name)
    if module is None:
        raise AttributeError("module 'flowkit.web' has no attribute %r" % (name,))
    return getattr(importlib.import_module(module), name)
