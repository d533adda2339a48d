"""The pre-fork master: starts N worker children, replaces only the one that
died, reclaims a dead child's jobs at once, forwards their events to this
process' handlers, and stops them gracefully. It needs no Redis connection
of its own to supervise (the reclaim uses the queue's, and is a shortcut:
without Redis, the stale flush reclaims the jobs later)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.subprocess

from . import logs
from .broker import REDIS_TROUBLE
from .child import BOOT_FAILURE, CONFIG_ENV, set_title
from .errors import ChildGaveUp, GreenQError
from .link import Link, decode_payload

if TYPE_CHECKING:
    from .queue import GreenQueue

log = logging.getLogger(__name__)

BOOT_GRACE = 30.0          # a child must say "ready" within this long
MAX_BOOT_FAILURES = 5      # children dying before "ready" in a row before the master gives up
BOOT_BACKOFF = (0.5, 8.0)  # first and longest pause before restarting a child that died at boot
FORCED_STOP_GRACE = 10.0   # after giving jobs back, children get this long before SIGKILL
LINK_DRAIN = 2.0           # after a child exited, how long the master may take to read what it sent
# After a child died, how long the master waits before it reclaims the
# child's jobs: a finish the child sent just before it died reaches Redis
# first (a later one is fenced, and its job runs again).
RECLAIM_DELAY = 0.2


class Child:
    """One worker child process as the master sees it: its process, its link,
    whether it said "ready", and where it is in its life (serving, a reload's
    candidate, retiring)."""

    def __init__(self, index: int, process: gevent.subprocess.Popen, link: Link) -> None:
        self.index = index
        self.process = process
        self.link = link
        self.ready = gevent.event.Event()
        self.retiring = False
        # A reload's replacement until it is ready: its death is the reload's
        # failure, not a crash to restart.
        self.candidate = False
        self.boot_error: str | None = None  # why it could not start, as it told us
        # Its GreenQueue's process id, which Redis files its jobs under; it
        # sends it before it fetches anything.
        self.process_id: str | None = None
        self.listener: gevent.Greenlet | None = None
        self.terms = 0  # SIGTERMs sent: the first asks for a graceful stop, the next rushes it

    @property
    def pid(self) -> int:
        return self.process.pid


class Master:
    """Supervises `count` worker children for a GreenQueue started with
    `child_process_count`: starts them, replaces one that dies (with back-off
    for deaths at boot, giving up after MAX_BOOT_FAILURES in a row), forwards
    their events, and answers reload, grow and shrink requests."""

    def __init__(self, queue: "GreenQueue") -> None:
        self.queue = queue
        self.count = queue.child_process_count
        self.children: dict[int, Child] = {}
        self.retired: list[Child] = []
        self.candidate: Child | None = None  # a reload's replacement while it boots
        self.stopping = False
        self.failure: ChildGaveUp | None = None
        self.failed = gevent.event.Event()
        self._boot_failures = 0
        self.restarts = 0
        # SIGHUP, SIGTTIN and SIGTTOU each run in their own greenlet: one at a time.
        self._operating = gevent.lock.Semaphore()
        self._listeners = gevent.pool.Group()  # one per child, until its channel closes
        self._reclaims = gevent.pool.Group()   # one per dead child, until its jobs are reclaimed

    # -- spawning --------------------------------------------------------------

    def _config(self, index: int, fd: int) -> dict:
        q = self.queue
        return {
            "fd": fd, "index": index, "children": self.count,
            "redis_url": q.redis_url, "redis_config": q.redis_config,
            "namespace": q.namespace, "queue_id": q.queue_id,
            "worker_count": q.worker_count, "serializer": q.serializer_name,
            "flush_stale_timeout": q.flush_stale_timeout, "max_params_bytes": q.max_params_bytes,
            "unknown_task_grace": q.unknown_task_grace, "result_ttl": q.result_ttl,
            "partitions": len(q.brokers),  # stored in Redis by the master's start
            "replicas": q.replicas,
            "tasks": q.registry.sources, "events": self.subscriptions(),
            # children import tasks by name: give them the path this process found them on
            "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
            "log_level": logging.getLogger("greenq").getEffectiveLevel() or logging.WARNING,
            # set apart: a busy queue silences its per-job lines alone (greenq/joblog.py)
            "job_log_level": logging.getLogger("greenq.jobs").getEffectiveLevel(),
            "log_format": logs.in_use(),  # text or json lines, as `greenq run --log-format`
        }

    def subscriptions(self) -> list[str]:
        return [e for e in ("job_success", "job_fail", "job_retry", "job_cancel", "error")
                if self.queue.events.wants(e)]

    def resubscribe(self) -> None:
        for child in self.children.values():
            child.link.send("subscribe", self.subscriptions())

    def spawn(self, index: int) -> Child:
        child = self._launch(index)
        self.children[index] = child
        return child

    def _launch(self, index: int) -> Child:
        """Start a child process for `index`, and the greenlets that follow it."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env[CONFIG_ENV] = json.dumps(self._config(index, theirs.fileno()))
        # Own session: a terminal's Ctrl-C reaches only the master, which then
        # stops the children gracefully (a second signal would rush them).
        process = gevent.subprocess.Popen(
            [sys.executable, "-m", "greenq.child"], env=env, pass_fds=[theirs.fileno()],
            start_new_session=True, close_fds=True)
        theirs.close()
        child = Child(index, process, Link(ours))
        child.listener = self._listeners.spawn(self._listen, child)
        gevent.spawn(self._watch, child)
        log.info("started worker child %d (pid %d)", index, child.pid)
        return child

    def start(self) -> None:
        if not self.queue.registry.sources:
            raise GreenQError("child processes need tasks registered by module name or file path")
        self._show_count()
        for index in range(1, self.count + 1):
            self.spawn(index)

    def _show_count(self) -> None:
        """Put the number of children in every process title: the master's,
        and each child's `worker i/n` (children are told over their link)."""
        q = self.queue
        set_title(f"greenq: master [{q.namespace}:{q.queue_id}] {self.count} "
                  f"{'child' if self.count == 1 else 'children'}")
        for child in self.children.values():
            child.link.send("children", self.count)

    # -- children's messages and deaths ------------------------------------------

    def _listen(self, child: Child) -> None:
        emit = self.queue.events.emit
        try:
            for message in child.link.receive():
                kind = message[0]
                if kind == "event":
                    emit(message[1], decode_payload(message[1], message[2]))
                elif kind == "ready":
                    child.ready.set()
                elif kind == "process":
                    child.process_id = message[1]
                elif kind == "failed":
                    child.boot_error = message[1]
        finally:
            child.link.close()

    def _watch(self, child: Child) -> None:
        status = child.process.wait()
        if child in self.retired:
            self.retired.remove(child)  # reaped: nothing left to signal or wait for
        was_ready = child.ready.is_set()
        if status not in (0, BOOT_FAILURE) and not self.stopping:
            # A crash: its jobs go back now rather than after their timeout.
            # (A child that exits 0 stopped gracefully and settled its jobs;
            # one that exits BOOT_FAILURE never started fetching.)
            self._reclaims.spawn(self._reclaim, child, status)
        if self.stopping or child.retiring or child.candidate:
            return  # expected, or the reload that started it deals with it
        if self.children.get(child.index) is child:
            del self.children[child.index]
        exitcode, signum = (None, -status) if status < 0 else (status, None)
        log.warning("worker child %d (pid %d) died (%s)", child.index, child.pid,
                    f"signal {signum}" if signum else f"exit status {exitcode}")
        self.restarts += 1
        self.queue.events.emit("child_restart", {
            "pid": child.pid, "exitcode": exitcode, "signal": signum, "index": child.index,
            "at_boot": not was_ready})
        if was_ready:
            self._boot_failures = 0
        else:
            self._boot_failures += 1
            if self._boot_failures >= MAX_BOOT_FAILURES:
                self._give_up(child, status)
                return
            pause = min(BOOT_BACKOFF[0] * 2 ** (self._boot_failures - 1), BOOT_BACKOFF[1])
            log.warning("worker child died before it was ready; restarting in %.1fs", pause)
            gevent.sleep(pause)
        if not self.stopping and child.index not in self.children:
            self.spawn(child.index)

    def _reclaim(self, child: Child, status: int) -> None:
        """Retry or fail the jobs of `child`, which died, at once, as a stale
        flush would after their timeout (same events, emitted here). The
        stale flush remains the fallback: when Redis does not answer now,
        nothing is lost, the jobs just wait out their timeout."""
        child.listener.join(LINK_DRAIN)  # its process id may still be unread
        if child.process_id is None:
            return  # died before it sent it, so before it could fetch a job
        gevent.sleep(RECLAIM_DELAY)
        why = (f"dead: process {child.process_id} (worker child {child.index}, pid {child.pid}) "
               f"died ({describe_status(status)}) running the job; its master reclaimed it")
        try:
            count = self.queue._reclaim_jobs_of(child.process_id, why)
        except REDIS_TROUBLE as exc:
            log.warning("could not reclaim the jobs of dead worker child %d (pid %d): %r; "
                        "the stale flush will, once their timeout passed", child.index, child.pid,
                        exc)
            return
        if count:
            log.info("reclaimed %d %s of dead worker child %d (pid %d)", count,
                        "job" if count == 1 else "jobs", child.index, child.pid)

    def _give_up(self, child: Child, status: int) -> None:
        why = ("could not load its tasks or reach Redis" if status == BOOT_FAILURE
               else f"exit status {status}")
        self.failure = ChildGaveUp(
            f"worker children died {self._boot_failures} times in a row before they were ready "
            f"(last: {why}); not restarting them. Their log above says why.")
        log.error("%s", self.failure)
        self.queue.events.emit("error", self.failure)
        self.failed.set()

    # -- operator requests (SIGHUP, SIGTTIN, SIGTTOU) ------------------------------

    def reload(self) -> None:
        """Replace children one by one, each new one ready before its old one
        stops gracefully: no job is dropped and task modules are re-imported.
        A replacement that cannot start (broken task code) ends the reload:
        the old children keep serving, and one `error` event says why."""
        with self._operating:
            for index in sorted(self.children):
                if self.stopping:
                    return
                new = self._launch(index)
                new.candidate = True
                self.candidate = new
                try:
                    why = self._boot(new)
                finally:
                    self.candidate = None
                if why is not None or self.stopping:
                    if new.process.poll() is None:
                        self._retire(new)  # stop() waits for it with the other retired ones
                    if self.stopping:
                        return
                    failure = GreenQError(f"reload failed: the new worker child {index} {why}; "
                                          "the old children keep running")
                    log.error("%s", failure)
                    self.queue.events.emit("error", failure)
                    return
                new.candidate = False
                old = self.children.get(index)  # gone if it died meanwhile
                self.children[index] = new
                if old is not None:
                    self._retire(old)

    def _boot(self, child: Child) -> str | None:
        """Wait for `child` to be ready; None when it is, else why it is not."""
        gevent.wait([child.ready, child.process.result], count=1, timeout=BOOT_GRACE)
        if child.ready.is_set():
            return None
        status = child.process.poll()
        if status is None:
            return f"was not ready within {BOOT_GRACE:.0f}s"
        child.listener.join(LINK_DRAIN)  # the reason it sent comes before the end of the channel
        if child.boot_error:
            return f"could not start: {child.boot_error}"
        return f"died before it was ready ({describe_status(status)})"

    def grow(self) -> None:
        with self._operating:
            self.count += 1
            self.spawn(max(self.children, default=0) + 1)
            self._show_count()

    def shrink(self) -> None:
        with self._operating:
            if self.count <= 1:
                log.warning("SIGTTOU ignored: keeping the last worker child")
                return
            self.count -= 1
            index = max(self.children)
            child = self.children.pop(index)
            self._retire(child)
            self._show_count()

    def _retire(self, child: Child) -> None:
        child.retiring = True
        self.retired.append(child)
        if child.terms == 0:  # a second SIGTERM would rush it (stop() may have sent one)
            self._signal(child, signal.SIGTERM)

    # -- stopping ------------------------------------------------------------------

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        if signum == signal.SIGTERM:
            child.terms += 1
        try:
            child.process.send_signal(signum)
        except (ProcessLookupError, OSError):
            pass

    def _alive(self) -> list[Child]:
        tracked = [*self.children.values(), *self.retired]
        if self.candidate is not None:
            tracked.append(self.candidate)
        return [c for c in tracked if c.process.poll() is None]

    def hurry(self) -> None:
        """Second signal: children give running jobs back and exit now."""
        for child in self._alive():
            self._signal(child, signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> None:
        self.stopping = True
        for child in self._alive():
            if child.terms == 0:  # retiring children are already stopping gracefully
                self._signal(child, signal.SIGTERM)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._alive():
            if deadline is not None and time.monotonic() > deadline:
                self.hurry()
                break
            gevent.sleep(0.05)
        forced = time.monotonic() + FORCED_STOP_GRACE
        while self._alive() and time.monotonic() < forced:
            gevent.sleep(0.05)
        for child in self._alive():
            log.error("worker child %d (pid %d) did not stop; killing it", child.index, child.pid)
            child.process.kill()
        for child in [*self.children.values(), *self.retired]:
            child.process.wait()
        # A reclaim still running needs the queue's connections, which the
        # caller closes next; one cut short is left to the stale flush.
        if not self._reclaims.join(timeout=LINK_DRAIN):
            self._reclaims.kill()
        # What the children sent before they exited may still be unread:
        # forward it before the caller stops the event bus.
        if not self._listeners.join(timeout=LINK_DRAIN):
            log.warning("a worker child's channel stayed open after it exited (a process it "
                        "started holds it?); its last events are dropped")
            self._listeners.kill()


def describe_status(status: int) -> str:
    """A Popen return code in words: `exit status 3`, `signal 9`."""
    return f"signal {-status}" if status < 0 else f"exit status {status}"
