"""The dashboard's actions (POST only; app.py has checked the CSRF token,
the origin and read-only mode before these run): retry, delete and cancel
for jobs picked by id, and for a filtered set after a confirmation page."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from werkzeug.exceptions import BadRequest
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from .. import browse

if TYPE_CHECKING:
    from .app import Context

log = logging.getLogger("greenq.web")

MAX_IDS = 500  # ids one form may name (a page shows at most 500 rows)

# action -> what is done to jobs picked by id, and the past tense the page shows.
BY_ID = {"retry": browse.retry, "delete": browse.delete, "cancel": browse.cancel}
PAST = {"retry": "retried", "delete": "deleted", "cancel": "cancelled"}
# action -> the lists a bulk action may apply to.
BULK_VIEWS = {"retry": ("failed",), "delete": ("failed",), "cancel": ("pending", "scheduled")}


def done_message(done: str) -> str | None:
    """"retry.3" -> "3 jobs retried"; anything else -> None. Only the
    count comes from the URL, so a crafted link cannot put words on the page."""
    action, _, number = done.partition(".")
    if action not in PAST or not number.isdigit() or len(number) > 9:
        return None
    return f"{number} job{'' if number == '1' else 's'} {PAST[action]}"


def _local(back: str) -> tuple[str, list[tuple[str, str]]]:
    """The path and query of the form's `back` field when it is a path
    inside this app, else the front page's: never a redirect elsewhere."""
    parts = urlsplit(back)
    if not back.startswith("/") or back.startswith(("//", "/\\")) or parts.scheme \
            or parts.netloc:
        return "/", []
    return parts.path, [(key, value) for key, value in parse_qsl(parts.query) if key != "done"]


def _back(context: Context, action: str, acted: int) -> Response:
    """303 to the page the form came from, with the count of jobs acted on."""
    path, query = _local(context.request.form.get("back", "/"))
    query.append(("done", f"{action}.{acted}"))
    return redirect(context.request.script_root + path + "?" + urlencode(query), code=303)


def act(context: Context, action: str) -> Response:
    """Jobs picked by id: the row's own button (`one`) or the ticked boxes (`ids`)."""
    form = context.request.form
    one = form.get("one")
    ids = [one] if one else [job_id for job_id in form.getlist("ids") if job_id]
    if not ids:
        raise BadRequest("no job was picked: tick at least one")
    if len(ids) > MAX_IDS:
        raise BadRequest(f"at most {MAX_IDS} jobs at a time")
    acted = BY_ID[action](context.queue, ids)
    log.info("dashboard: %s: %d of %d jobs picked", PAST[action], acted, len(ids))
    return _back(context, action, acted)


def bulk(context: Context, action: str) -> Response:
    """Every job of a list (of a task): first a page saying how many, then,
    when that page's form comes back with confirm=yes, the action."""
    form = context.request.form
    view, task = form.get("view", ""), form.get("task") or None
    if view not in BULK_VIEWS[action]:
        raise BadRequest(f"{action} applies to the jobs {' or '.join(BULK_VIEWS[action])}, "
                         f"not {view!r}")
    if form.get("confirm") != "yes":
        matching = browse.count_matching(context.queue, view, task=task)
        path, query = _local(form.get("back", "/"))
        back = path + ("?" + urlencode(query) if query else "")
        return context.render("confirm.html", title="Confirm", action=action, view=view,
                              task=task or "", matching=matching, back=back,
                              back_url=context.request.script_root + back, past=PAST[action],
                              counts=browse.counts(context.queue), done=None)
    acted = _bulk(context.queue, action, view, task)
    log.info("dashboard: %s %d %s jobs%s", PAST[action], acted, view,
             f" of task {task!r}" if task else "")
    return _back(context, action, acted)


def _bulk(queue: Any, action: str, view: str, task: str | None) -> int:
    if action == "retry":
        return browse.retry_all_failed(queue, task=task)
    if action == "delete":
        return browse.delete_all_failed(queue, task=task)
    return browse.cancel_all(queue, view, task=task)
