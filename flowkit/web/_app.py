"""The dashboard's ASGI application: routes, pages, JSON answers and the guarded actions."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import secrets
import threading
import urllib.parse
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from flowkit import graphs, states
from flowkit.exceptions import FlowkitError, InvalidState, NotFound, SignalAlreadySent
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail
from flowkit.web import _model, _resources
from flowkit.web._actions import Actions

__all__ = ["create_app", "SESSION_COOKIE"]


#: The cookie that carries a logged-in browser's session.
SESSION_COOKIE = "flowkit_session"

_FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)
# The pages run no script at all; styles are the server's own sheet plus the
# computed widths of timeline bars.  Pictures are the server's or data: URIs.
_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The class (a colour in web.css) of each state a flow or an atom can be shown in.
_STATE_CLASSES = {
    states.PENDING: "idle",
    states.IGNORE: "idle",
    states.SUCCESS: "ok",
    states.FAILURE: "bad",
    states.REVERT_FAILURE: "bad",
    states.BROKEN: "bad",
    _model.INTERRUPTED: "warn",
    states.REVERTED: "warn",
    states.REVERTING: "warn",
    states.RUNNING: "live",
    states.RESUMING: "live",
    states.RETRYING: "live",
    states.WAITING: "wait",
    states.SUSPENDING: "wait",
    states.SUSPENDED: "wait",
}


# The same for each status of a reconciled resource (flowkit.reconcile.ResourceStatus values).
_STATUS_CLASSES = {
    "converging": "live",
    "converged": "ok",
    "broken": "bad",
    "unreachable": "warn",
}


class _Dashboard:
    """One served dashboard: what it reads, what it may do, and the sessions logged in to act."""

    def __init__(
        self,
        backend: Backend,
        board: Any,
        *,
        mask_keys: Collection[str],
        allow_actions: bool,
        token: str | None,
        allowed_modules: Iterable[str],
        refresh: int,
    ) -> None:
        if allow_actions and not token:
            raise ValueError("actions need a token: give --token (or $FLOWKIT_WEB_TOKEN) with --allow-actions")
        self.backend = backend
        self.board = board
        self.mask_keys = frozenset(mask_keys)
        self.allow_actions = allow_actions
        self.token = token
        self.allowed_modules = tuple(allowed_modules)
        self.refresh = refresh
        self.secret = secrets.token_bytes(32)
        self.sessions: set[str] = set()
        # What the last action of each session did, shown once on the next page.
        self.flashes: dict[str, str] = {}
        self.actions = Actions(backend, allowed_modules)
        self.lock = threading.Lock()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("flowkit.web", "templates"),
            autoescape=True,  # every value from the database is escaped in the page
            undefined=jinja2.StrictUndefined,
        )
        self.templates.globals["state_class"] = lambda state: _STATE_CLASSES.get(state, "")
        self.templates.globals["status_class"] = lambda status: _STATUS_CLASSES.get(status, "")
        self.templates.filters["when"] = _model._iso  # epoch seconds (a resource's times) as ISO 8601 UTC
        self.templates.filters["json_text"] = lambda value: _model._json_text(value, ())

    # -- pages -------------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = self.session_of(request)
        context.setdefault("refresh", self.refresh)
        context.update(
            allow_actions=self.allow_actions,
            logged_in=session is not None,
            csrf=self.csrf_for(session) if session is not None else "",
            has_board=self.board is not None,
            path=request.url.path,
        )
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=_headers())

    # -- sessions and tokens --------------------------------------------------------------

    def token_ok(self, given: str | None) -> bool:
        return bool(self.token) and given is not None and hmac.compare_digest(given.encode(), str(self.token).encode())

    def session_of(self, request: Request) -> str | None:
        session = request.cookies.get(SESSION_COOKIE)
        return session if session is not None and session in self.sessions else None

    def pop_flash(self, request: Request) -> str:
        session = self.session_of(request)
        with self.lock:
            return self.flashes.pop(session, "") if session is not None else ""

    def csrf_for(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def same_origin(self, request: Request) -> bool:
        # A browser names the page a form was posted from; it must be ours.
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin:
            return True
        host = request.headers.get("host", "")
        rest = origin.split("://", 1)[-1]
        return rest.split("/", 1)[0] == host


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=_headers())


def _filter(request: Request) -> _model.FlowFilter:
    query = request.query_params
    wanted = frozenset(s.strip().upper() for value in query.getlist("state") for s in value.split(",") if s.strip())
    since_text = (query.get("since") or "").strip()
    now = datetime.datetime.now(datetime.timezone.utc)
    since = _model.parse_since(since_text, now) if since_text else None
    name = (query.get("name") or "").strip() or None
    return _model.FlowFilter(states=wanted, name=name, since=since, limit=_limit(request))


def _limit(request: Request) -> int:
    text = request.query_params.get("limit") or "200"
    try:
        limit = int(text)
    except ValueError:
        raise ValueError("limit must be a whole number, got %r" % (text,)) from None
    if not 1 <= limit <= 5000:
        raise ValueError("limit must be between 1 and 5000, got %d" % (limit,))
    return limit


def _resource_filter(request: Request) -> _resources.ResourceFilter:
    query = request.query_params
    status = (query.get("status") or "").strip().lower() or None
    known = _resources.statuses()
    if status is not None and status not in known:
        raise ValueError("status must be one of %s, got %r" % (", ".join(known), status))
    kind = (query.get("kind") or "").strip() or None
    return _resources.ResourceFilter(kind=kind, status=status, limit=_limit(request))


def _graph(dashboard: _Dashboard, fd: FlowDetail) -> tuple[bytes | None, str | None]:
    """The flow's SVG coloured by its states, or None and why it cannot be drawn."""
    from flowkit.engines import flow_from_detail

    if graphs.dot_program() is None:
        return None, "no graph: Graphviz's 'dot' program is not installed on the server (apt-get install graphviz)"
    try:
        flow = flow_from_detail(fd, allowed_modules=dashboard.allowed_modules)
    except (FlowkitError, ValueError) as error:
        return None, _model.clip("no graph: %s" % (error,), "error")
    try:
        return graphs.render(graphs.to_dot(flow, flow_detail=fd), "svg"), None
    except FlowkitError as error:
        return None, _model.clip("no graph: %s" % (error,), "error")


def create_app(
    backend: Backend,
    *,
    board: Any = None,
    mask_keys: Collection[str] = (),
    allow_actions: bool = False,
    token: str | None = None,
    allowed_modules: Iterable[str] = (),
    refresh: int = 5,
    allowed_hosts: Collection[str] | None = None,
) -> Starlette:
    """The dashboard over ``backend`` (and job ``board``, if given) as an ASGI application.

    Read-only unless ``allow_actions``; then ``token`` is required, and a
    browser logs in with it (a session cookie, and a CSRF token in every form)
    while a program sends it as ``Authorization: Bearer TOKEN``.  Values under
    ``mask_keys`` in results are shown as ``***``.  ``allowed_modules`` are the
    module prefixes whose factories may be imported to rebuild a flow (for its
    graph and for resuming); registered factories need none.  Pages reload
    themselves every ``refresh`` seconds (0: never; a flow that ended is not
    reloaded).  ``allowed_hosts`` (None: any) are the host names a request may
    be addressed to (its ``Host`` header); others get 400, which keeps a page
    of another site from reading a dashboard on this machine through a DNS
    name it points at 127.0.0.1.
    """
    dashboard = _Dashboard(
        backend,
        board,
        mask_keys=mask_keys,
        allow_actions=allow_actions,
        token=token,
        allowed_modules=allowed_modules,
        refresh=max(0, int(refresh)),
    )

    def problem(request: Request, error: Exception, status: int) -> Response:
        if request.url.path.startswith("/api/"):
            return _json({"error": _model.clip(str(error), "error")}, status)
        return dashboard.page(request, "error.html", status, message=_model.clip(str(error), "error"), refresh=0)

    def guarded(handler: Any) -> Any:
        def endpoint(request: Request) -> Response:
            try:
                return handler(request)
            except NotFound as error:
                return problem(request, error, 404)
            except (ValueError, TypeError, InvalidState, SignalAlreadySent) as error:
                return problem(request, error, 400 if not isinstance(error, (InvalidState, SignalAlreadySent)) else 409)
            except FlowkitError as error:
                return problem(request, error, 500)

        return endpoint

    def index(request: Request) -> Response:
        return RedirectResponse("/flows", status_code=303)

    def flows_page(request: Request) -> Response:
        which = _filter(request)
        listing = _model.list_flows(backend, which)
        return dashboard.page(
            request,
            "flows.html",
            listing=listing,
            query={
                "state": ",".join(sorted(which.states)),
                "name": which.name or "",
                "since": request.query_params.get("since", ""),
                "limit": which.limit,
            },
        )

    def flows_api(request: Request) -> Response:
        return _json(_model.list_flows(backend, _filter(request)))

    def flow_page(request: Request) -> Response:
        book, fd = _model.find_flow(backend, request.path_params["ident"])
        view = _model.flow_view(backend, book, fd, mask_keys=dashboard.mask_keys)
        svg, reason = _graph(dashboard, fd)
        picture = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii") if svg is not None else None
        return dashboard.page(
            request,
            "flow.html",
            flow=view,
            graph=picture,
            graph_reason=reason,
            message=dashboard.pop_flash(request),
            # Reloading a flow that ended shows nothing new and would fold an opened traceback.
            refresh=0 if view["state"] in _FINISHED else dashboard.refresh,
        )

    def flow_api(request: Request) -> Response:
        book, fd = _model.find_flow(backend, request.path_params["ident"])
        view = _model.flow_view(backend, book, fd, mask_keys=dashboard.mask_keys)
        svg, reason = _graph(dashboard, fd)
        view["graph"] = {
            "available": svg is not None,
            "reason": reason,
            "svg": "/api/flows/%s/graph.svg" % (view["uuid"],) if svg is not None else None,
        }
        return _json(view)

    def graph_svg(request: Request) -> Response:
        _, fd = _model.find_flow(backend, request.path_params["ident"])
        svg, reason = _graph(dashboard, fd)
        if svg is None:
            return PlainTextResponse(reason or "no graph", status_code=404, headers=_headers())
        return Response(svg, media_type="image/svg+xml", headers=_headers())

    def jobs_view() -> dict[str, Any]:
        if board is None:
            raise NotFound("no job board: start 'flowkit web' with --board URL to see jobs and conductors")
        return _model.jobs_view(board)

    def jobs_page(request: Request) -> Response:
        return dashboard.page(request, "jobs.html", jobs=jobs_view())

    def jobs_api(request: Request) -> Response:
        return _json(jobs_view())

    def resources_page(request: Request) -> Response:
        which = _resource_filter(request)
        listing = _resources.list_resources(backend, which, mask_keys=dashboard.mask_keys)
        return dashboard.page(
            request,
            "resources.html",
            listing=listing,
            statuses=_resources.statuses(),
            query={"kind": which.kind or "", "status": which.status or "", "limit": which.limit},
        )

    def resources_api(request: Request) -> Response:
        # A list, as `flowkit resources list --json` prints it.
        listing = _resources.list_resources(backend, _resource_filter(request), mask_keys=dashboard.mask_keys)
        return _json(listing["resources"])

    def resource_view(request: Request) -> dict[str, Any]:
        params = request.path_params
        return _resources.resource_view(backend, params["kind"], params["ident"], mask_keys=dashboard.mask_keys)

    def resource_page(request: Request) -> Response:
        return dashboard.page(request, "resource.html", resource=resource_view(request))

    def resource_api(request: Request) -> Response:
        return _json(resource_view(request))

    def stylesheet(request: Request) -> Response:
        css = dashboard.templates.loader.get_source(dashboard.templates, "web.css")[0]  # type: ignore[union-attr]
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    def actions_enabled() -> None:
        if not dashboard.allow_actions:
            raise _Forbidden("this dashboard is read-only: start it with --allow-actions --token ... to act")

    async def login(request: Request) -> Response:
        if not dashboard.allow_actions:
            return dashboard.page(request, "error.html", 403, message="this dashboard is read-only", refresh=0)
        if request.method == "GET":
            return dashboard.page(
                request, "login.html", refresh=0, failed=False, next=_local(request.query_params.get("next"))
            )
        form = await request.form()
        nxt = _local(str(form.get("next") or ""))
        if not dashboard.same_origin(request) or not dashboard.token_ok(str(form.get("token") or "")):
            return dashboard.page(request, "login.html", 403, refresh=0, failed=True, next=nxt)
        session = secrets.token_urlsafe(32)
        with dashboard.lock:
            dashboard.sessions.add(session)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    async def act_form(request: Request) -> Response:
        try:
            actions_enabled()
            form = {key: str(value) for key, value in (await request.form()).items()}
            session = dashboard.session_of(request)
            if session is None:
                raise _Forbidden("log in with the dashboard's token first")
            if not dashboard.same_origin(request) or not hmac.compare_digest(
                form.get("csrf", ""), dashboard.csrf_for(session)
            ):
                raise _Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
            ident = request.path_params["ident"]
            done = dashboard.actions.do(request.path_params["action"], ident, form)
        except _Forbidden as error:
            return problem(request, error, 403)
        except NotFound as error:
            return problem(request, error, 404)
        except (FlowkitError, ValueError, TypeError) as error:
            return problem(request, error, 409 if isinstance(error, (InvalidState, SignalAlreadySent)) else 400)
        with dashboard.lock:
            dashboard.flashes[session] = done
        return RedirectResponse("/flows/%s" % (urllib.parse.quote(ident, safe=""),), status_code=303)

    async def act_api(request: Request) -> Response:
        try:
            actions_enabled()
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not dashboard.token_ok(given.strip()):
                raise _Forbidden("send the dashboard's token as 'Authorization: Bearer TOKEN'")
            raw = await _body(request, _MAX_BODY)
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            form = {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in body.items()}
            done = dashboard.actions.do(request.path_params["action"], request.path_params["ident"], form)
        except _Forbidden as error:
            return problem(request, error, 403)
        except NotFound as error:
            return problem(request, error, 404)
        except (FlowkitError, ValueError, TypeError) as error:
            return problem(request, error, 409 if isinstance(error, (InvalidState, SignalAlreadySent)) else 400)
        return _json({"done": _model.clip(done, "error")})

    routes = [
        Route("/", index),
        Route("/flows", guarded(flows_page)),
        Route("/flows/{ident}", guarded(flow_page)),
        Route("/jobs", guarded(jobs_page)),
        Route("/resources", guarded(resources_page)),
        # An id may hold any character but NUL, a slash too: it is the rest of the path.
        Route("/resources/{kind}/{ident:path}", guarded(resource_page)),
        Route("/api/flows", guarded(flows_api)),
        Route("/api/flows/{ident}", guarded(flow_api)),
        Route("/api/flows/{ident}/graph.svg", guarded(graph_svg)),
        Route("/api/jobs", guarded(jobs_api)),
        Route("/api/resources", guarded(resources_api)),
        Route("/api/resources/{kind}/{ident:path}", guarded(resource_api)),
        Route("/static/web.css", stylesheet),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/flows/{ident}/{action}", act_form, methods=["POST"]),
        Route("/api/flows/{ident}/{action}", act_api, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.actions.stop()

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.dashboard = dashboard
    return app


# The largest JSON body an API action reads.
_MAX_BODY = 64 * 1024


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (ValueError) once it passes ``limit`` bytes, before reading more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueError("the request body is larger than %d bytes" % (limit,))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ValueError("the request body is larger than %d bytes" % (limit,))
        chunks.append(chunk)
    return b"".join(chunks)


class _Forbidden(Exception):
    """The request may not act (read-only dashboard, no session, a bad token or CSRF token)."""


def _local(target: str | None) -> str:
    # Only a path on this server: never send a browser elsewhere after logging in.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/flows"
    return target
