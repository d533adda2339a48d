"""`greenq run`'s main loop: signal handlers only note the signal; this loop
acts on it (gunicorn's arbiter learned that the hard way)."""

from __future__ import annotations

import logging
import signal

import gevent
import gevent.event

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
OTHER_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


def keep_running_through_stray_exits() -> None:
    """A greenlet a task spawned and left behind may raise SystemExit or
    KeyboardInterrupt; gevent's hub would end the worker process with it.
    Signals are handled above, so in a worker process these are just errors."""
    gevent.get_hub().SYSTEM_ERROR = (SystemError,)


def run_until_signalled(queue) -> int:
    """Start `queue`, serve signals until it has shut down; the exit status."""
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
                    log.info("%s: graceful shutdown, running jobs finish (again to stop now)", name)
                    shutting_down = gevent.spawn(queue.shutdown)
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
