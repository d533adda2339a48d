"""Long-lived greenlets that run jobs, at most `size` at once.

A greenlet spawned per job (gevent.pool.Pool) cost about 10 us of a no-op
job's 24 us of Python: the Greenlet object, its start callback, its links
and the pool's bookkeeping. Here a runner, once spawned, loops: it takes the
next job from the inbox, runs it, and parks (a Waiter, woken by one hub
callback) only when the inbox is empty. Handing a job to a parked runner
costs about a microsecond.

A runner outlives its jobs, so an exception aimed at one job (a cancel, a
shutdown's give-back) must not land in the next job the same runner takes:
`interrupt` delivers it from a hub callback, and only if that runner still
runs that job at the moment of delivery. One aimed at a job still in the
inbox is delivered once a runner takes the job.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable

import gevent
import gevent.event
from gevent.hub import Waiter, get_hub

log = logging.getLogger(__name__)


class Runners:
    """Runs `run(job, task)` for each job given to `start`, at most `size`
    at once, each in one of up to `size` long-lived greenlets."""

    def __init__(self, size: int, run: Callable[[Any, Any], None]) -> None:
        self.size = size
        self.busy = 0  # jobs started and not yet returned from run
        self._run = run
        self._hub = get_hub()
        self._inbox: deque = deque()
        self._parked: list[Waiter] = []
        self._runners: set[gevent.Greenlet] = set()
        self._runner_of: dict[str, gevent.Greenlet] = {}  # job id -> the runner running it
        self._early: dict[str, BaseException] = {}  # job id in the inbox -> its interrupt
        self._available = gevent.event.Event()
        self._available.set()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._closed = False

    def free_count(self) -> int:
        return self.size - self.busy

    def full(self) -> bool:
        return self.busy >= self.size

    def start(self, job: Any, task: Any) -> None:
        """Run `job`; the caller checks `full()` first."""
        self.busy += 1
        if self.busy >= self.size:
            self._available.clear()
        self._idle.clear()
        self._inbox.append((job, task))
        while self._parked:
            waiter = self._parked.pop()
            if waiter.greenlet is not None:  # still parked on it (see _loop)
                self._hub.loop.run_callback(waiter.switch, None)
                return
        if len(self._runners) < self.size:
            runner = gevent.spawn(self._loop)
            self._runners.add(runner)
        # Otherwise every runner is running or about to look at the inbox:
        # one finishing its job takes this one before it parks.

    def wait_available(self, timeout: float | None = None) -> None:
        """Until a slot is free (or `timeout` passed)."""
        self._available.wait(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Until no job runs (or `timeout` passed); True if none runs."""
        return self._idle.wait(timeout)

    def interrupt(self, job_id: str, exception: BaseException) -> None:
        """Raise `exception` in job `job_id` where it next yields, if it
        still runs when the hub gets to it; otherwise nothing."""
        runner = self._runner_of.get(job_id)
        if runner is not None:
            self._hub.loop.run_callback(self._throw, runner, job_id, exception)
        elif any(job.id == job_id for job, _task in self._inbox):
            self._early[job_id] = exception

    def _throw(self, runner: gevent.Greenlet, job_id: str, exception: BaseException) -> None:
        if self._runner_of.get(job_id) is runner:
            runner.throw(exception)

    def close(self) -> None:
        """End the parked runners (and any later ones once their job returns)."""
        self._closed = True
        busy = set(self._runner_of.values())
        for runner in list(self._runners):
            if runner not in busy:
                runner.kill(block=False)

    def _loop(self) -> None:
        me = gevent.getcurrent()
        inbox, runner_of = self._inbox, self._runner_of
        try:
            while not self._closed:
                if not inbox:
                    waiter = Waiter(self._hub)
                    self._parked.append(waiter)
                    try:
                        waiter.get()
                    except BaseException:  # noqa: BLE001 - thrown in while parked
                        # Only close() ends a runner; anything else (a
                        # Timeout or kill a task left behind) is not for
                        # it. The waiter is dropped: start() skips it.
                        if self._closed:
                            return
                        log.warning("runner: an exception reached an idle runner; ignored",
                                    exc_info=True)
                    continue
                job, task = inbox.popleft()
                runner_of[job.id] = me
                if self._early and job.id in self._early:
                    self._hub.loop.run_callback(self._throw, me, job.id, self._early.pop(job.id))
                try:
                    self._run(job, task)
                except BaseException:  # noqa: BLE001 - run reports its job's errors; this is greenq's own
                    log.exception("runner: job %s ended with an error outside its task", job.id)
                finally:
                    if runner_of.get(job.id) is me:
                        del runner_of[job.id]
                    self.busy -= 1
                    if self.busy == self.size - 1:
                        self._available.set()
                    if self.busy == 0:
                        self._idle.set()
        finally:
            self._runners.discard(me)
