"""gunicorn server hooks that run GreenQueues inside `gunicorn -k gevent`
workers and stop them the way gunicorn stops its workers.

The app module creates its queue at import and hands it to `serve()`; the
gunicorn config file imports the hooks:

    # app.py
    queue = GreenQueue(...)
    queue.register_task("tasks.py")
    greenq.contrib.gunicorn.serve(queue)     # not queue.start()

    # gunicorn.conf.py
    from greenq.contrib.gunicorn import post_worker_init, worker_int, worker_abort, worker_exit
    worker_class = "gevent"

- `post_worker_init` (each worker, after the app is loaded): sends greenq's
  log records to gunicorn's error log when the app set up no logging, and
  starts every served queue.
- SIGTERM to a worker (gunicorn's graceful stop, a HUP reload, a scale-down):
  the queues stop fetching at once and running jobs finish while gunicorn
  drains its requests; jobs still running `GIVE_BACK_MARGIN` seconds before
  the worker's deadline (its `graceful_timeout`, or its `timeout` when that
  is shorter: gunicorn kills a worker silent that long) go back to the queue.
- `worker_int` (SIGINT or SIGQUIT, gunicorn's quick shutdown, also after a
  SIGTERM): running jobs go back to the queue now, before gunicorn's kill.
- `worker_abort` (SIGABRT, a worker gunicorn found stuck): the same, as the
  worker exits.
- `worker_exit`: waits for the queues to stop (within the deadline), and
  stops them when the worker ended without a signal (`max_requests`).

A config with hooks of its own calls these from them. A queue served
outside gunicorn, or under a config without the hooks, is never started:
the app then only submits, as it may in any process.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from ..errors import NotPatchedError, StateError

if TYPE_CHECKING:  # no redis-py or gevent at import: a gunicorn config imports this module
    from ..queue import GreenQueue

log = logging.getLogger(__name__)

# Seconds kept, out of the worker's deadline, for giving running jobs back
# (a Redis round trip per process, and the committer's last batch) and for
# the process to exit before gunicorn's SIGKILL.
GIVE_BACK_MARGIN = 2.0
# gunicorn's quick shutdown (SIGINT/SIGQUIT after SIGTERM) kills workers 2 s
# after it asked them to stop; worker_int waits this long for the give-back.
QUICK_GIVE_BACK = 1.5

__all__ = ["serve", "post_worker_init", "worker_int", "worker_abort", "worker_exit",
           "GIVE_BACK_MARGIN"]


class _Serving:
    """This process's share of the hooks: the queues the app served, and the
    stop under way. One per process (a forked worker starts from its
    parent's copy and owns nothing it did not start)."""

    def __init__(self) -> None:
        self.queues: list[tuple[GreenQueue, int]] = []  # (queue, pid that created it)
        self.started: list[GreenQueue] = []
        self.owner = 0          # the pid that started them
        self.budget = 0.0       # seconds from a stop request to the worker's deadline
        self.deadline: float | None = None  # monotonic; set when the stop begins
        self.stoppers: list[Any] = []  # one greenlet per queue running shutdown()

    def mine(self) -> list[GreenQueue]:
        return self.started if self.owner == os.getpid() else []


_serving = _Serving()


def serve(queue: GreenQueue) -> GreenQueue:
    """Have the hooks start `queue` in every gunicorn worker once the app is
    loaded, and stop it with the worker. Call it at import, in place of
    `queue.start()`. Returns the queue."""
    if not any(served is queue for served, _pid in _serving.queues):
        _serving.queues.append((queue, os.getpid()))
    return queue


# -- the hooks -----------------------------------------------------------------------


def post_worker_init(worker: Any) -> None:
    """gunicorn hook, in each worker after the app is loaded: start the
    served queues, and make the worker's SIGTERM stop them gracefully."""
    from gevent import monkey

    _log_through_gunicorn(worker)
    if not monkey.is_module_patched("socket"):
        raise NotPatchedError(
            "greenq.contrib.gunicorn: the queues run in gevent workers; run gunicorn with "
            "-k gevent (worker_class = \"gevent\" in the config file)")
    pid = os.getpid()
    for queue, created_in in _serving.queues:
        if created_in != pid:
            raise StateError(
                f"greenq.contrib.gunicorn: {queue!r} was created in pid {created_in} and "
                f"forked into this worker; turn off preload_app (--preload) so that each "
                f"worker imports the app and creates its own queue")
    if not _serving.queues:
        log.warning("greenq.contrib.gunicorn hooks are installed but the app served no queue: "
                    "call greenq.contrib.gunicorn.serve(queue) where the app creates it")
        return
    timeouts = [worker.cfg.graceful_timeout]
    if worker.cfg.timeout:  # 0 turns gunicorn's silence check off
        timeouts.append(worker.cfg.timeout)
    _serving.owner, _serving.budget = pid, float(min(timeouts))
    for queue, _pid in _serving.queues:
        queue.start()
        _serving.started.append(queue)
        log.info("greenq: started %r, %d jobs at a time; on SIGTERM running jobs get %.0f s "
                 "to finish", queue, queue.worker_count,
                 max(0.0, _serving.budget - GIVE_BACK_MARGIN))
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        # Only flags and spawns, as a signal handler should; gunicorn's own
        # handler (previous) ends the worker's loop.
        if callable(previous):
            previous(signum, frame)
        _begin_stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: no EINTR in requests


def worker_int(worker: Any) -> None:
    """gunicorn hook, on SIGINT or SIGQUIT (its quick shutdown): give the
    running jobs back to the queue now, waiting up to QUICK_GIVE_BACK s."""
    if not _serving.mine():
        return
    _begin_stop()
    _hurry()
    _join(time.monotonic() + QUICK_GIVE_BACK)


def worker_abort(worker: Any) -> None:
    """gunicorn hook, on SIGABRT (the worker was silent for `timeout`): the
    worker exits at once, so running jobs go back to the queue in
    worker_exit. Called inside the signal handler: it only flags."""
    if _serving.mine():
        _begin_stop()
        _hurry()


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn hook, as a worker ends: wait for the queues to stop (running
    jobs finish, or go back at the deadline). Also called in the master for
    a worker already gone, where there is nothing to stop."""
    if not _serving.mine():
        return
    _begin_stop()
    _join(None)


# -- stopping ------------------------------------------------------------------------


def _begin_stop() -> None:
    """Start every queue's graceful shutdown in its own greenlet, once."""
    if _serving.stoppers:
        return
    import gevent

    _serving.deadline = time.monotonic() + _serving.budget
    timeout = max(0.0, _serving.budget - GIVE_BACK_MARGIN)
    _serving.stoppers = [gevent.spawn(_stop, queue, timeout) for queue in _serving.started]


def _stop(queue: GreenQueue, timeout: float) -> None:
    log.info("greenq: stopping %r: no new jobs; running jobs get %.0f s to finish", queue,
             timeout)
    queue.shutdown(timeout=timeout)
    log.info("greenq: stopped %r", queue)


def _hurry() -> None:
    for queue in _serving.started:
        queue.hurry_shutdown()


def _join(until: float | None) -> None:
    """Wait for the stop to end, until `until` (monotonic) or the deadline."""
    import gevent

    deadline = _serving.deadline
    if until is not None:
        deadline = until if deadline is None else min(until, deadline)
    if deadline is None:
        return
    pending = [stopper for stopper in _serving.stoppers if not stopper.dead]
    if pending:
        gevent.joinall(pending, timeout=max(0.0, deadline - time.monotonic()))


# -- logging -------------------------------------------------------------------------


def _log_through_gunicorn(worker: Any) -> None:
    """Give the "greenq" logger gunicorn's error-log handlers (its format,
    file and level) when the app configured no handler that would reach it;
    otherwise Python's last-resort handler prints greenq's warnings bare and
    drops everything below WARNING."""
    logger = logging.getLogger("greenq")
    if logger.hasHandlers():
        return
    error_log = getattr(worker.log, "error_log", None) or logging.getLogger("gunicorn.error")
    for handler in error_log.handlers:
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(error_log.getEffectiveLevel())
