"""GreenQueue: the facade users hold. Submits and inspects from any program;
`start()` adds the workers (in this process, or child processes)."""

from __future__ import annotations

import base64
import logging
import os
import socket
import types
from datetime import datetime
from typing import Any, Callable, Iterable

import redis

from . import config, failed, tracing
from .broker import Broker
from .errors import JobDecodeError, NotPatchedError, ParamsError, StateError
from .events import EventBus
from .health import Health
from .job import Job, job_from_record, text
from .keys import Keys
from .nodes import Nodes
from .partitions import Partitions, check_partitions, stored_partitions
from .registry import Registry
from .serializers import decode_params, get_serializer
from .server_check import eviction_warning, lua_flaw_warning
from .waiting import Listener, check_timeout

log = logging.getLogger(__name__)

_FLUSH_BATCH = 1000


def new_job_id() -> str:
    """96 random bits, 16 URL-safe characters: chosen here, so a re-sent submit
    is recognised by Redis as the same job. Never with a leading "-", which
    a command line would take for an option (`greenq cancel <id>`)."""
    job_id = base64.urlsafe_b64encode(os.urandom(12)).decode()
    return "_" + job_id[1:] if job_id.startswith("-") else job_id


def _check_id(value: Any, what: str, *, int_ok: bool = False) -> str:
    # Resource ids are often database keys, so an int is taken as its decimal
    # string; a task id is a name, and an int there is a caller's mistake.
    allowed = (str, int) if int_ok else str
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    value = str(value)
    if not value:
        raise ParamsError(f"{what} must not be empty")
    if len(value) > config.MAX_ID_LENGTH:
        raise ParamsError(f"{what} is {len(value)} characters; at most {config.MAX_ID_LENGTH}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ParamsError(f"{what} is not valid Unicode") from None
    return value


def due_time(delay: Any, run_at: Any) -> str:
    """submit.lua's due field: "" now, "+<ms>" after Redis' now, "<ms>" an
    epoch time. ParamsError for a negative delay, both given, or a naive
    datetime (whose time zone would be a guess)."""
    if delay is not None and run_at is not None:
        raise ParamsError("give delay or run_at, not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
        if not 0 <= delay < float("inf"):
            raise ParamsError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
        return f"+{round(delay * 1000)}" if delay else ""
    if run_at is None:
        return ""
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ParamsError("run_at must be an aware datetime (with tzinfo, e.g. "
                              "datetime.now(timezone.utc)); a naive one has no definite time")
        run_at = run_at.timestamp()
    elif isinstance(run_at, bool) or not isinstance(run_at, (int, float)):
        raise TypeError(f"run_at must be an aware datetime or epoch seconds, "
                        f"not {type(run_at).__name__}")
    if not 0 <= run_at < float("inf"):
        raise ParamsError(f"run_at must be a finite epoch time >= 0, not {run_at!r}")
    return str(round(run_at * 1000))


class GreenQueue:
    """A job queue on Redis. See the README for the whole API."""

    def __init__(
        self,
        redis_url: str | None = None,
        redis_config: dict[str, Any] | None = None,
        namespace: str = config.DEFAULT_NAMESPACE,
        queue_id: str = config.DEFAULT_QUEUE_ID,
        child_process_count: int = 0,
        worker_count: int | None = None,
        flush_stale_timeout: float = config.DEFAULT_FLUSH_STALE_TIMEOUT,
        serializer: str = "msgpack",
        *,
        max_params_bytes: int = config.MAX_PARAMS_BYTES,
        unknown_task_grace: float = config.DEFAULT_UNKNOWN_TASK_GRACE,
        result_ttl: float = config.DEFAULT_RESULT_TTL,
        partitions: int | None = None,
        replicas: int = 0,
    ) -> None:
        for name, value in (("namespace", namespace), ("queue_id", queue_id)):
            if not isinstance(value, str) or not value or "{" in value or "}" in value:
                raise ValueError(f"{name} must be a non-empty str without braces, not {value!r}")
        if isinstance(child_process_count, bool) or not isinstance(child_process_count, int) \
                or child_process_count < 0:
            raise ValueError("child_process_count must be an int >= 0")
        if worker_count is None:
            worker_count = config.DEFAULT_WORKER_COUNT
        if isinstance(worker_count, bool) or not isinstance(worker_count, int) or worker_count < 1:
            raise ValueError("worker_count must be an int >= 1")
        if not isinstance(flush_stale_timeout, (int, float)) or not flush_stale_timeout > 0:
            raise ValueError("flush_stale_timeout must be a number of seconds > 0")
        grace = unknown_task_grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) \
                or not 0 <= grace < float("inf"):
            raise ValueError("unknown_task_grace must be a number of seconds >= 0")
        if isinstance(result_ttl, bool) or not isinstance(result_ttl, (int, float)) \
                or not 0 <= result_ttl < float("inf"):
            raise ValueError("result_ttl must be a number of seconds >= 0")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be an int >= 0, not {replicas!r}")
        self.serializer = get_serializer(serializer)
        self.serializer_name = serializer
        self.namespace, self.queue_id = namespace, queue_id
        self.child_process_count = child_process_count
        self.worker_count = worker_count
        self.flush_stale_timeout = float(flush_stale_timeout)
        self.max_params_bytes = max_params_bytes
        self.unknown_task_grace = float(unknown_task_grace)
        self.result_ttl = float(result_ttl)
        self.replicas = replicas  # submits and finishes wait for this many replicas (Redis WAIT)
        self.redis_url, self.redis_config = redis_url, redis_config
        seeds = None
        if redis_config is None:
            # A redis+cluster:// URL: the first node's URL carries the
            # settings every node shares (password, TLS, timeouts).
            redis_url, seeds = config.split_cluster_url(redis_url or config.redis_url_from_env())
        self.connection = config.connection_kwargs(redis_url, redis_config)
        self.nodes = Nodes(self.connection, seeds)
        # As asked (None: as stored in Redis); the number in use is
        # len(self.brokers), read from Redis at first use.
        self.partitions = check_partitions(partitions)
        self._partitions: Partitions | None = None
        self._partitions_stored = False
        self.registry = Registry()
        self.events = EventBus()
        # wait()'s shared pub/sub listener: no connection or thread until the first wait().
        self._listener = Listener(self._partition_set, self.connection.get("socket_timeout"),
                                  max_params_bytes)
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{new_job_id()[:6]}"
        self._runner: Any = None  # a Worker, or a Master with child processes
        # Set by greenq.child: a job overrunning its time limit on a blocked
        # hub ends the process (the master replaces it).
        self._exit_when_stuck = False
        # What this process is in the registry of live workers: "worker" runs
        # jobs in this process; greenq.child sets "child" (with its index and
        # master pid), whose master already checked the server and said so.
        self._about: dict[str, Any] = {"role": "worker"}
        self._redis_run_id: str | None = None
        self._scheduler: Any = None  # fires schedules once started, unless a child (scheduler.py)
        self._state = "new"

    # -- partitions ----------------------------------------------------------

    def _partition_set(self, store: bool = False) -> Partitions:
        """The queue's partitions, their number read from Redis at the first
        call that needs it; `store`: a call that writes to the queue, which
        stores the number if Redis has none yet (the queue's first use)."""
        if self._partitions is None or not self._partitions_stored:
            # Until Redis has the number, each call asks again: another
            # process (workers started with partitions=N) may store it first.
            count, self._partitions_stored = stored_partitions(
                self.nodes, self.namespace, self.queue_id, self.partitions, store)
            if self._partitions is None or self._partitions.count != count:
                self._partitions = Partitions(self.nodes, self.namespace, self.queue_id, count,
                                              self.result_ttl, self.replicas)
        return self._partitions

    @property
    def brokers(self) -> list[Broker]:
        """One Broker per partition, partition 0 first (as last learned: the
        queue's own calls look again while Redis has no number stored)."""
        return (self._partitions or self._partition_set()).brokers

    @property
    def broker(self) -> Broker:
        """Partition 0's Broker: the whole queue when it has one partition."""
        return self.brokers[0]

    @property
    def keys(self) -> Keys:
        """Partition 0's keys."""
        return self.broker.keys

    # -- tasks and events ----------------------------------------------------

    def register_task(self, spec: str | types.ModuleType) -> None:
        if self._state != "new":
            raise StateError("register tasks before start()")
        self.registry.register(spec)

    def on(self, event: str, handler: Callable[[Any], Any]) -> None:
        self.events.on(event, handler)
        if hasattr(self._runner, "resubscribe"):
            self._runner.resubscribe()  # children forward only events someone listens to

    # -- submitting ----------------------------------------------------------

    def _row(self, task_id: Any, resource_id: Any = None, params: Any = None,
             retries: int = 0, job_id: Any = None, coalesce: Any = False,
             delay: Any = None, run_at: Any = None) -> list:
        task_id = _check_id(task_id, "task_id")
        resource = "" if resource_id is None else _check_id(resource_id, "resource_id", int_ok=True)
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError("retries must be an int")
        if retries < 0:
            raise ParamsError("retries must be >= 0")
        job_id = new_job_id() if job_id is None else _check_id(job_id, "job_id")
        if not isinstance(coalesce, bool):
            raise TypeError(f"coalesce must be a bool, not {type(coalesce).__name__}")
        if coalesce and not resource:
            raise ParamsError("coalesce=True needs a resource_id: it merges into the newest "
                              "job of that resource")
        due = due_time(delay, run_at)
        if coalesce and due:
            raise ParamsError("coalesce=True cannot be combined with delay or run_at: it merges "
                              "into a job already in its resource's order")
        blob = self.serializer.encode(params, self.max_params_bytes)
        return [job_id, task_id, resource, self.serializer.tag, blob, retries,
                "1" if coalesce else "0", due]

    def submit_job(self, task_id: str, *, resource_id: str | None = None,
                   params: Any = None, retries: int = 0,
                   delay: float | None = None, run_at: datetime | float | None = None,
                   job_id: str | None = None, coalesce: bool = False) -> str:
        """Queue one job; returns its id once Redis has it.

        `delay` (seconds) or `run_at` (an aware datetime, or epoch seconds):
        the job becomes runnable then, by Redis' clock, and only then takes
        its place in its resource's order; until then it is "scheduled".

        `job_id`: a caller-chosen id; while a record with that id exists,
        submitting it again adds nothing and returns it (idempotent).
        `coalesce`: when the newest job of `resource_id` that has not started
        is of the same task, replace its params and retries instead, and
        return its id.

        With `replicas=N`, it returns once N replicas have the job, and
        raises BrokerError when they do not confirm within
        config.REPLICA_WAIT (5 s). The job was added on the master all the
        same, and runs unless the master fails over before its replicas
        catch up; submitting it again with the same `job_id` is safe (it
        adds nothing while the job exists), so pass one if you will retry."""
        row = self._row(task_id, resource_id, params, retries, job_id, coalesce, delay, run_at)
        if tracing.recording():
            with tracing.send(self.queue_id, [row]):
                _added, [final_id] = self._partition_set(store=True).add([row])
        else:
            _added, [final_id] = self._partition_set(store=True).add([row])
        return final_id

    def submit_jobs(self, jobs: Iterable[dict[str, Any]]) -> list[str]:
        """Queue many jobs in few round trips; all are checked before any is written.
        With `replicas=N`, BrokerError as for submit_job: the jobs were
        added on the master, but may not all be on its replicas yet."""
        rows = []
        for index, spec in enumerate(jobs):
            if not isinstance(spec, dict):
                raise TypeError(f"jobs[{index}] must be a dict, not {type(spec).__name__}")
            unknown = set(spec) - {"task_id", "resource_id", "params", "retries", "job_id",
                                   "coalesce", "delay", "run_at"}
            if unknown or "task_id" not in spec:
                raise TypeError(f"jobs[{index}]: needs task_id; unknown keys {sorted(unknown)}")
            try:
                rows.append(self._row(**spec))
            except (TypeError, ValueError) as exc:  # ParamsError is a ValueError
                raise type(exc)(f"jobs[{index}]: {exc}") from None
        if not rows:
            return []
        if tracing.recording():
            with tracing.send(self.queue_id, rows):
                _added, ids = self._partition_set(store=True).add(rows)
        else:
            _added, ids = self._partition_set(store=True).add(rows)
        return ids

    # -- one job ---------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """The job as Redis has it now (one round trip), or None when the id
        is unknown or its record expired (result_ttl). Any process, no gevent
        needed. Raises JobDecodeError when the key holds something that is
        not a job record."""
        job_id = _check_id(job_id, "job_id")
        try:
            record = self._partition_set().record(job_id)
        except redis.ResponseError as exc:
            raise JobDecodeError(f"job {job_id}: its key holds no job record ({exc})") from None
        if not record:
            return None
        return job_from_record(job_id, record, self.max_params_bytes)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job. Not started yet: it never runs, and its resource
        passes on at once. Running: its greenlet gets JobCancelled where it
        next yields, within about 2 s (its process learns of it from its
        next heartbeat), and it ends "cancelled", not retried. True when the
        job was cancelled, False when it had already ended or is unknown."""
        job_id = _check_id(job_id, "job_id")
        return self._partition_set().cancel(job_id) == 1

    # -- waiting -------------------------------------------------------------

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has ended (succeeded, failed with no retry
        left, or cancelled) and return it, with its `state`, `result` and
        `error`. A job that had already ended returns at once.

        Raises WaitTimeout (a GreenQError and TimeoutError) when `timeout`
        seconds pass first, JobNotFoundError (a GreenQError and LookupError)
        when the id is unknown, its record expired or was deleted, and
        StateError once the queue was shut down. Works in any process,
        threads included, without gevent. Polls nothing: every waiter of
        this queue in this process shares one pub/sub connection, on which
        the script that ends a waited-on job publishes its id."""
        job_id = _check_id(job_id, "job_id")
        return self._listener.wait(job_id, check_timeout(timeout))

    # -- running -------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, the heartbeat/stale tick and event delivery."""
        if self._state != "new":
            raise StateError(f"start() on a queue that is {self._state}")
        from gevent import monkey

        if not monkey.is_module_patched("socket"):
            raise NotPatchedError(
                "start() needs gevent's monkey-patching: call gevent.monkey.patch_all() first "
                "thing in the program (or run `greenq run`); unpatched, the workers would "
                "block every thread of this program")
        if not self.registry.tasks:
            log.warning("start() with no task registered: every job fetched goes back to the "
                        "queue, and fails after unknown_task_grace")
        partitions = self._partition_set(store=True)
        partitions.load_scripts()
        # For stale flushes anywhere: they retry a dead job after its back-off.
        partitions.publish_retry_policies(list(self.registry.tasks.values()))
        self._warn_about_server()
        self.events.start()
        if self.child_process_count:
            from .master import Master

            self._runner = Master(self)
        else:
            from .worker import Worker

            self._runner = Worker(self.brokers, self.registry, self.process_id, self.worker_count,
                                  Health(self.events.emit, self._after_outage), self.events.emit,
                                  self.max_params_bytes, self.flush_stale_timeout,
                                  self._exit_when_stuck, self.unknown_task_grace,
                                  about=self._about, serializer=self.serializer,
                                  queue_id=self.queue_id)
        self._runner.start()
        if self._about["role"] != "child":  # children leave firing to their master
            from .scheduler import Scheduler

            self._scheduler = [Scheduler(broker, self.events.emit) for broker in self.brokers]
            for scheduler in self._scheduler:
                scheduler.start()
        self._state = "running"

    def _warn_about_server(self) -> None:
        try:
            info = self.broker.shared.info("server")
            self._redis_run_id = info.get("run_id")
            warning = lua_flaw_warning(info)
            if warning and self._about["role"] != "child":
                log.warning(warning)
        except redis.ResponseError:  # INFO may be forbidden to this ACL user
            pass
        if self._about["role"] == "child":
            return  # said once by the master, not again by each child and each restart
        try:
            reply = self.broker.shared.config_get("maxmemory-policy")
        except redis.ResponseError:  # so may CONFIG; nothing to warn about then
            return
        # redis-py 8 answers CONFIG GET with str keys even on a bytes client.
        settings: dict[Any, Any] = dict(reply)
        policy = settings.get("maxmemory-policy", settings.get(b"maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        warning = eviction_warning(policy)
        if warning:
            log.warning(warning)

    def _after_outage(self) -> None:
        """Redis answers again: say so loudly if it is a new server process
        (restarted), which lost every job unless it kept its data on disk.
        A log line, not an `error` event: the outage already had its one.
        Not on a cluster or behind Sentinel, where a failover puts another
        server in place."""
        if self.nodes.cluster or self.connection.get("master_locator") is not None:
            return
        try:
            run_id = self.broker.shared.info("server").get("run_id")
        except Exception:  # noqa: BLE001 - a check, not a reason to fail
            return
        if self._redis_run_id and run_id and run_id != self._redis_run_id:
            log.warning("Redis restarted during the outage (run_id %s -> %s): unless it keeps its "
                        "data on disk (AOF), the queued and running jobs are gone, and finishes of "
                        "jobs it forgot are reported as lost leases",
                        self._redis_run_id[:8], run_id[:8])
        self._redis_run_id = run_id

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking jobs, let running ones finish (jobs still running after
        `timeout` go back to the queue), stop children, close connections.

        With a timeout, in-process workers return within `timeout` plus
        worker.SHUTDOWN_MARGIN (1 s), even while Redis does not answer:
        what could not be written then (outcomes, give-backs) is left to the
        stale flush, which runs those jobs again after their timeout. Safe to
        call twice, and after a `start()` that failed."""
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        try:
            for scheduler in self._scheduler or ():
                scheduler.stop()
            if self._runner is not None:
                self._runner.stop(timeout)
            self.events.stop()
        finally:
            self._listener.close()
            self.nodes.close()
            self._state = "stopped"

    def hurry_shutdown(self) -> None:
        """During a graceful `shutdown()` (in another greenlet): stop waiting
        for running jobs and give them back to the queue now."""
        if self._runner is not None:
            self._runner.hurry()

    # -- schedules -----------------------------------------------------------

    def add_schedule(self, name: str, task_id: str, *, cron: str | None = None,
                     every: float | None = None, resource_id: str | None = None,
                     params: Any = None, retries: int = 0, tz: str = "UTC") -> None:
        """Create or replace the schedule `name`: a job of `task_id` on a
        five-field `cron` expression read in time zone `tz`, or every
        `every` seconds (at least 1). Runs of one schedule never overlap:
        they hold `resource_id`, or "schedule:<name>" when none is given.
        Replacing a schedule with the same timing keeps its next fire time.
        Bad arguments raise ParamsError and write nothing. Any process, no
        gevent needed."""
        from .schedules import check_timing, next_fire_ms

        try:
            name = _check_id(name, "schedule name")
            task_id = _check_id(task_id, "task_id")
            resource = "" if resource_id is None else \
                _check_id(resource_id, "resource_id", int_ok=True)
        except TypeError as exc:
            raise ParamsError(str(exc)) from None
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ParamsError(f"retries must be an int >= 0, not {retries!r}")
        timing = check_timing(cron, every, tz)
        blob = self.serializer.encode(params, self.max_params_bytes)
        partitions = self._partition_set(store=True)
        # Kept in the partition of its jobs' resource, so a fire is one
        # script in one partition; moved there if its resource changed.
        home = partitions.schedule_home(name, resource)
        partitions.remove_schedule(name, keep=home)
        next_ms = next_fire_ms(timing, home.redis_now_ms())
        home.save_schedule(name, next_ms, timing.fields(),
                           (task_id, resource, self.serializer.tag, blob, retries))

    def remove_schedule(self, name: str) -> bool:
        """Remove the schedule `name`; True when it existed. Jobs it already
        submitted stay queued."""
        try:
            name = _check_id(name, "schedule name")
        except TypeError as exc:
            raise ParamsError(str(exc)) from None
        return self._partition_set().remove_schedule(name)

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, soonest first: name, task_id, cron, every, tz,
        resource_id (None: its runs hold "schedule:<name>"), params,
        next_run and last_run (epoch seconds; last_run None before the
        first fire)."""
        from .schedules import timing_from_fields

        listed = []
        for name, next_ms, definition in self._partition_set().all_schedules():
            get = definition.get
            timing = timing_from_fields(text(get(b"cron")) or "", text(get(b"every")) or "",
                                        text(get(b"tz")) or "UTC")
            try:
                params = decode_params(get(b"enc"), get(b"params"), self.max_params_bytes)
            except JobDecodeError:
                params = get(b"params")
            last = get(b"last")
            listed.append({"name": name, "task_id": text(get(b"task")) or "",
                           "cron": timing.cron, "every": timing.every, "tz": timing.tz,
                           "resource_id": text(get(b"res")) or None, "params": params,
                           "retries": int(get(b"retries") or 0),
                           "next_run": next_ms / 1000,
                           "last_run": None if last is None else int(last) / 1000})
        return listed

    # -- failed queue and inspection -------------------------------------------

    def _drain(self, step: Callable[[int], int]) -> int:
        total = 0
        while True:
            done = step(_FLUSH_BATCH)
            total += done
            if done < _FLUSH_BATCH:
                return total

    def retry_failed_jobs(self, job_ids: Iterable[str] | None = None,
                          task_id: str | None = None) -> int:
        """Put failed jobs back on the queue, behind their resource's holder:
        every one, or those of `job_ids` and/or of task `task_id` (both:
        the jobs that match both). Returns how many."""
        ids, task = failed.check_filters(job_ids, task_id)
        if ids is None and task is None:
            return sum(self._drain(broker.retry_failed) for broker in self.brokers)
        return sum(failed.select(broker, "retry", ids, task) for broker in self.brokers)

    def delete_failed_jobs(self, job_ids: Iterable[str] | None = None,
                           task_id: str | None = None) -> int:
        """Delete failed jobs, records included: every one, or those of
        `job_ids` and/or of task `task_id`. Returns how many."""
        ids, task = failed.check_filters(job_ids, task_id)
        if ids is None and task is None:
            return sum(self._drain(broker.delete_failed) for broker in self.brokers)
        return sum(failed.select(broker, "delete", ids, task) for broker in self.brokers)

    def force_flush_stale_jobs(self) -> int:
        from .committer import Committer

        reporter = Committer(self.brokers, self.process_id, 0, None, self.events.emit,
                             self.max_params_bytes)
        total = 0
        for broker in self.brokers:
            def flush(limit: int, broker: Broker = broker) -> int:
                return reporter.after_flush(broker.flush_stale(limit))
            total += self._drain(flush)
        return total

    def _reclaim_jobs_of(self, process_id: str, why: str) -> int:
        """Retry or fail now every job `process_id` holds, with the error
        text `why`, emitting job_retry / job_fail here: a master saw that
        worker child die. Returns how many."""
        from .committer import Committer

        reporter = Committer(self.brokers, self.process_id, 0, None, self.events.emit,
                             self.max_params_bytes)
        total = 0
        for broker in self.brokers:
            left = 1
            while left:
                rows, left = broker.reclaim_process(process_id, why, _FLUSH_BATCH)
                total += reporter.after_flush(rows)
        return total

    def failed_jobs(self, limit: int = 100, task_id: str | None = None) -> list[Job]:
        """The failed queue, oldest first: at most `limit` jobs, only those
        of task `task_id` when it is given."""
        _, task_id = failed.check_filters(None, task_id)
        partitions = self._partition_set()
        if task_id is None:
            records = partitions.failed_records(limit)
        else:
            records = [entry for broker in partitions.brokers
                       for entry in failed.records_of_task(broker, task_id, limit)]
            if len(partitions.brokers) > 1:
                records.sort(key=lambda entry: int(entry[1].get(b"ended") or 0))
            records = records[:limit]
        return [job_from_record(text(job_id) or "", record, self.max_params_bytes)
                for job_id, record in records if record]

    def stats(self) -> dict[str, int]:
        """Job counts, and `workers`: worker processes heard from within
        config.PROCESS_GONE_AFTER (5 s), idle ones included."""
        return self._partition_set().stats()

    def __repr__(self) -> str:
        where = f"{self.namespace}:{{{self.queue_id}}}"
        return f"<GreenQueue {where} {config.describe(self.connection)} {self._state}>"
