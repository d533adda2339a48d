"""`greenq run`'s main loop: signal handlers only note the signal; this loop
acts on it (gunicorn's arbiter learned that the hard way)."""

from __future__ import annotations

import logging
import signal
import time

import gevent
import gevent.event
import redis
from redis.backoff import EqualJitterBackoff

from . import config

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
OTHER_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
REDIS_WAIT_BACKOFF = (0.25, 2.0)  # first and longest wait between tries while Redis is not up


def wait_for_redis(queue, seconds: float) -> int | None:
    """Return None once Redis answers; while it cannot be reached (not up
    yet: the start-up race of compose and Kubernetes), try again for up to
    `seconds`, with jittered back-off and a log line per try, then raise the
    last error. A refused password or a server that is not Redis raises at
    once. SIGTERM or SIGINT meanwhile: returns the exit status (0; 130, as
    an interrupted command)."""
    deadline = time.monotonic() + seconds
    first, longest = REDIS_WAIT_BACKOFF
    backoff = EqualJitterBackoff(cap=longest, base=first)  # each wait in [d/2, d], d doubling
    stopped = gevent.event.AsyncResult()
    # gevent's handlers, not Python's: a KeyboardInterrupt raised in the hub
    # is printed by it before it reaches the command.
    handlers = [gevent.signal_handler(signum, stopped.set, signum) for signum in STOP_SIGNALS]
    where = config.describe(queue.connection)
    tries = 0
    try:
        while True:
            try:
                queue.broker.ping()
                answered = True
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError):
                raise  # ConnectionError subclasses, but waiting will not fix them
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                answered, tries = False, tries + 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                wait = min(backoff.compute(tries - 1), left)
                log.warning("Redis at %s not reachable yet (try %d: %s); next try in %.1fs, "
                            "giving up in %.0fs", where, tries, exc, wait, left)
                stopped.wait(wait)
            if stopped.ready():  # during the wait, or during a ping (which may have worked)
                signum = stopped.get()
                log.info("%s while waiting for Redis: stopping", signal.Signals(signum).name)
                return 130 if signum == signal.SIGINT else 0
            if answered:
                if tries:
                    log.info("Redis at %s answers", where)
                return None
    finally:
        for handler in handlers:
            handler.cancel()


def keep_running_through_stray_exits() -> None:
    """A greenlet a task spawned and left behind may raise SystemExit or
    KeyboardInterrupt; gevent's hub would end the worker process with it.
    Signals are handled above, so in a worker process these are just errors."""
    gevent.get_hub().SYSTEM_ERROR = (SystemError,)


def run_until_signalled(queue, graceful_timeout: float | None = None) -> int:
    """Start `queue`, serve signals until it has shut down; the exit status.
    `graceful_timeout`: after SIGTERM/SIGINT, jobs still running after this
    many seconds go back to the queue (None: they may take all they need)."""
    received: list[int] = []
    wake = gevent.event.Event()

    def note(signum: int) -> None:
        received.append(signum)
        wake.set()

    for signum in STOP_SIGNALS + OTHER_SIGNALS:
        gevent.signal_handler(signum, note, signum)
    keep_running_through_stray_exits()
    queue.start()
    master = queue._runner if queue.child_process_count else None
    log.info("greenq running: %r, tasks %s", queue, ", ".join(sorted(queue.registry.tasks)))
    shutting_down = None
    waiters = [wake] + ([master.failed] if master else [])
    while True:
        gevent.wait(waiters + ([shutting_down] if shutting_down else []), count=1)
        wake.clear()
        if shutting_down is not None and shutting_down.ready():
            shutting_down.get()
            break
        if master is not None and master.failed.is_set():
            log.error("stopping: %s", master.failure)
            queue.shutdown(timeout=0)
            return 3
        while received:
            signum = received.pop(0)
            name = signal.Signals(signum).name
            if signum in STOP_SIGNALS:
                if shutting_down is None:
                    if graceful_timeout is None:
                        log.info("%s: graceful shutdown, running jobs finish (again to stop now)",
                                 name)
                    else:
                        log.info("%s: graceful shutdown, running jobs finish; those still running "
                                 "in %gs go back to the queue (again to stop now)", name,
                                 graceful_timeout)
                    shutting_down = gevent.spawn(queue.shutdown, graceful_timeout)
                else:
                    log.warning("%s again: giving running jobs back to the queue", name)
                    queue.hurry_shutdown()
            elif master is None:
                log.warning("%s needs worker children (-c N); ignored", name)
            elif shutting_down is None:
                action, what = {
                    signal.SIGHUP: (master.reload, "replacing children one by one"),
                    signal.SIGTTIN: (master.grow, "one child more"),
                    signal.SIGTTOU: (master.shrink, "one child less")}[signum]
                log.info("%s: %s", name, what)
                gevent.spawn(action)
    log.info("greenq stopped")
    return 0
