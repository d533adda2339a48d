"""greenq's web dashboard: `make_app(queue)` is a WSGI app (served by
`greenq web`, or mounted in a Flask or Django app) showing one queue's
counts, history, running, locked, pending, scheduled and failed jobs,
schedules and processes, with retry/delete/cancel actions, plus /metrics
and /api/stats. Its data comes from greenq.browse alone.

`make_app` is imported on first use, so the `greenq` command (which
registers `greenq web` from greenq.web.command) loads neither Jinja2 nor
werkzeug unless the dashboard is served."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import make_app

__all__ = ["make_app"]


def __getattr__(name: str):
    if name == "make_app":
        from .app import make_app

        return make_app
    raise AttributeError(f"module 'greenq.web' has no attribute {name!r}")
