"""The dashboard's WSGI app: routing, the login and CSRF gates, security
headers, and turning errors into pages. Pages are in views.py, actions in
actions.py; every value they show comes from greenq.browse."""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Iterable

from werkzeug.exceptions import Forbidden, HTTPException, Unauthorized
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .. import config
from ..errors import GreenQError
from . import actions, views
from .auth import REALM, Guard
from .templating import make_environment

if TYPE_CHECKING:
    from ..queue import GreenQueue

log = logging.getLogger("greenq.web")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

ROUTES = Map([
    Rule("/", endpoint="dashboard"),
    Rule("/running", endpoint="running"),
    Rule("/locked", endpoint="locked"),
    Rule("/waiting", endpoint="waiting"),
    Rule("/pending", endpoint="pending"),
    Rule("/scheduled", endpoint="scheduled"),
    Rule("/schedules", endpoint="schedules"),
    Rule("/processes", endpoint="processes"),
    Rule("/failed", endpoint="failed"),
    Rule("/jobs/<path:job_id>", endpoint="job"),
    Rule("/metrics", endpoint="metrics"),
    Rule("/api/stats", endpoint="api_stats"),
    Rule("/static/<any('greenq.css', 'greenq.js'):name>", endpoint="static"),
    # POST only: a GET here is answered 405 by the router and changes nothing.
    Rule("/actions/<any(retry, delete, cancel):action>", endpoint="act", methods=["POST"]),
    Rule("/bulk/<any(retry, delete, cancel):action>", endpoint="bulk", methods=["POST"]),
])

HANDLERS: dict[str, Callable[..., Response]] = {
    "dashboard": views.dashboard, "running": views.running, "locked": views.locked,
    "waiting": views.waiting, "pending": views.pending, "scheduled": views.scheduled,
    "schedules": views.schedules, "processes": views.processes, "failed": views.failed,
    "job": views.job, "metrics": views.metrics, "api_stats": views.api_stats,
    "act": actions.act, "bulk": actions.bulk,
}

# No inline script or style anywhere: the page's own files only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

STATIC_TYPES = {"greenq.css": "text/css; charset=utf-8",
                "greenq.js": "text/javascript; charset=utf-8"}


class Context:
    """What a page handler needs: the queue, the request, URL building and
    rendering with the values every page shows."""

    def __init__(self, app: "WebApp", request: Request, urls: Any) -> None:
        self.app, self.queue, self.request, self._urls = app, app.queue, request, urls

    @property
    def read_only(self) -> bool:
        return self.app.read_only

    def url(self, endpoint: str, **values: Any) -> str:
        values = {key: value for key, value in values.items() if value not in (None, "")}
        return self._urls.build(endpoint, values)

    def here(self) -> str:
        """This page's path and query, relative to the app's mount point."""
        query = self.request.query_string.decode("latin-1")
        return self.request.path + (f"?{query}" if query else "")

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        rule = getattr(self.request, "url_rule", None)
        page = self.app.templates.get_template(template).render(
            url=self.url, here=self.here(), read_only=self.read_only,
            csrf=self.app.guard.csrf_token, queue_name=self.app.queue_name,
            where=self.app.where, endpoint=rule.endpoint if rule else None, **values)
        return Response(page, status=status, content_type="text/html; charset=utf-8")


class WebApp:
    """The WSGI callable make_app returns."""

    def __init__(self, queue: "GreenQueue", read_only: bool, password: str | None,
                 secret: str | None) -> None:
        self.queue, self.read_only = queue, read_only
        self.guard = Guard(password, secret)
        self.templates = make_environment()
        self.queue_name = f"{queue.namespace}:{queue.queue_id}"
        self.where = config.describe(queue.connection)  # host:port/db, never the password

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = self.respond(request)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        urls = ROUTES.bind_to_environ(request.environ)
        context = Context(self, request, urls)
        try:
            if not self.guard.logged_in(request):
                raise Unauthorized(www_authenticate=_challenge())
            rule, arguments = urls.match(return_rule=True)
            request.url_rule = rule
            if rule.endpoint == "static":
                return _static(arguments["name"])
            if request.method == "POST":
                if self.read_only:
                    raise Forbidden("this dashboard is read-only: actions are turned off")
                refusal = self.guard.action_refusal(request)
                if refusal is not None:
                    raise Forbidden(f"action refused: {refusal}")
            return HANDLERS[rule.endpoint](context, **arguments)
        except Unauthorized as exc:
            # Nothing about the queue (not even its Redis address) before login.
            challenge = [(name, value) for name, value in exc.get_headers()
                         if name.lower() == "www-authenticate"]
            return Response("greenq: login required\n", status=401, headers=challenge,
                            content_type="text/plain; charset=utf-8")
        except HTTPException as exc:
            return _error_page(context, exc.code or 500, exc.name, exc.description or "",
                               exc.get_headers())
        except ValueError as exc:  # bad input the data layer refused (a cursor, a limit)
            return _error_page(context, 400, "Bad Request", str(exc))
        except Exception as exc:
            return _failure_page(context, exc)


def _challenge() -> Any:
    from werkzeug.datastructures import WWWAuthenticate

    return WWWAuthenticate("basic", {"realm": REALM})


def _static(name: str) -> Response:
    body = resources.files("greenq.web").joinpath("static", name).read_bytes()
    response = Response(body, content_type=STATIC_TYPES[name])
    response.headers["Cache-Control"] = "max-age=300"
    return response


def _error_page(context: Context, code: int, title: str, text: str,
                headers: Iterable[tuple[str, str]] = ()) -> Response:
    response = context.render("error.html", status=code, code=code, title=title, text=text)
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _failure_page(context: Context, exc: Exception) -> Response:
    import redis

    if isinstance(exc, redis.RedisError):
        # redis-py's texts name the host and port, never the password; the
        # page says where by the queue's own password-free description.
        log.warning("dashboard: Redis at %s failed: %s: %s", context.app.where,
                    type(exc).__name__, exc)
        return _error_page(context, 503, "Redis unavailable",
                           f"Redis at {context.app.where} did not answer ({type(exc).__name__}); "
                           "try again in a moment.")
    if isinstance(exc, GreenQError):
        log.warning("dashboard: %s", exc)
        return _error_page(context, 500, "greenq error", str(exc))
    log.exception("dashboard: error serving %s", context.request.path)
    return _error_page(context, 500, "Internal Server Error",
                       "the dashboard failed; its log has the details")


def make_app(queue: "GreenQueue", *, read_only: bool = False, password: str | None = None,
             secret: str | None = None) -> WSGIApp:
    """The dashboard of `queue` as a WSGI app, to serve (`greenq web`) or to
    mount in a Flask or Django app (werkzeug's DispatcherMiddleware).

    `read_only`: no actions (their buttons hidden, their POSTs refused).
    `password`: every path asks for it (HTTP basic, any user name).
    `secret`: the CSRF token; give the same one to every process serving
    this dashboard behind one address (a pre-fork server's workers), else
    each process draws its own and a form posted to another process fails.
    """
    from ..queue import GreenQueue

    if not isinstance(queue, GreenQueue):
        raise TypeError(f"make_app needs a GreenQueue, not {type(queue).__name__}")
    if not isinstance(read_only, bool):
        raise TypeError("read_only must be True or False")
    return WebApp(queue, read_only, password, secret)


__all__ = ["make_app", "WebApp"]
