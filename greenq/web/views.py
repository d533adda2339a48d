"""The dashboard's pages (GET), one function per route: read one page of
data through greenq.browse and render it. /metrics and /api/stats too."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.wrappers import Response

from .. import browse, metrics as queue_metrics
from . import chart

if TYPE_CHECKING:
    from .app import Context

log = logging.getLogger("greenq.web")

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
PREVIEW = 10        # rows of each list the dashboard's front page shows
HISTORY_MINUTES = 60


def _paging(context: Context) -> tuple[str | None, int]:
    """The request's cursor and limit (?cursor=, ?limit=)."""
    args = context.request.args
    raw = args.get("limit", "")
    try:
        limit = int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        raise BadRequest(f"limit must be a whole number, not {raw[:40]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return args.get("cursor") or None, limit


def _list_page(context: Context, template: str, title: str, reader: Any,
               filters: dict[str, Any] | None = None, **extra: Any) -> Response:
    """A paginated list page of `reader` (a browse function), given the
    request's cursor and limit and `filters` (its other arguments, kept in
    the pager's links)."""
    cursor, limit = _paging(context)
    filters = filters or {}
    page = reader(context.queue, **filters, cursor=cursor, limit=limit)
    args = {key: value for key, value in filters.items() if value}
    if limit != DEFAULT_LIMIT:
        args["limit"] = str(limit)
    endpoint = context.request.url_rule.endpoint
    next_url = context.url(endpoint, cursor=page.cursor, **args) if page.cursor else None
    first_url = context.url(endpoint, **args) if cursor else None
    return context.render(template, title=title, page=page, next_url=next_url,
                          first_url=first_url, counts=browse.counts(context.queue),
                          done=_done(context), **filters, **extra)


def _done(context: Context) -> str | None:
    """The note an action left in the URL it redirected to (?done=retry.3)."""
    from .actions import done_message

    return done_message(context.request.args.get("done", ""))


def dashboard(context: Context) -> Response:
    queue = context.queue
    rows = queue_metrics.history(queue, minutes=HISTORY_MINUTES)
    return context.render(
        "dashboard.html", title="Dashboard", counts=browse.counts(queue),
        chart=chart.build(rows), series=chart.SERIES, history_minutes=HISTORY_MINUTES,
        running=browse.running(queue, limit=PREVIEW), locked=browse.locked(queue, limit=PREVIEW),
        failed=browse.failed(queue, limit=PREVIEW), done=_done(context))


def running(context: Context) -> Response:
    return _list_page(context, "running.html", "Running jobs", browse.running)


def locked(context: Context) -> Response:
    return _list_page(context, "locked.html", "Locked resources", browse.locked)


def waiting(context: Context) -> Response:
    resource = context.request.args.get("resource")
    if not resource:
        raise BadRequest("which resource? give ?resource=")
    return _list_page(context, "jobs.html", "Waiting behind a resource", browse.waiting_behind,
                      {"resource": resource}, view=None)


def pending(context: Context) -> Response:
    return _list_page(context, "jobs.html", "Pending jobs", browse.pending,
                      resource=None, view="pending")


def scheduled(context: Context) -> Response:
    return _list_page(context, "scheduled.html", "Scheduled jobs", browse.scheduled)


def schedules(context: Context) -> Response:
    return _list_page(context, "schedules.html", "Schedules", browse.schedules)


def processes(context: Context) -> Response:
    return _list_page(context, "processes.html", "Processes", browse.processes)


def failed(context: Context) -> Response:
    task = context.request.args.get("task") or None
    return _list_page(context, "failed.html", "Failed jobs", browse.failed, {"task": task},
                      tasks=browse.failed_tasks(context.queue))


def job(context: Context, job_id: str) -> Response:
    found = browse.job(context.queue, job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}: the id is unknown, or the job ended and its "
                       "record expired")
    return context.render("job.html", title=f"Job {job_id}", job=found,
                          counts=browse.counts(context.queue), done=_done(context))


def metrics(context: Context) -> Response:
    body, content_type = queue_metrics.render(context.queue)
    return Response(body, content_type=content_type)


def api_stats(context: Context) -> Response:
    return Response(json.dumps(browse.counts(context.queue)),
                    content_type="application/json")
