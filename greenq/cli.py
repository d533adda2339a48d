"""The `greenq` command. Exit status: 0 ok; 1 Redis unreachable (or not
Redis at that address, or refusing the password) or another runtime
failure (and a job that failed, was cancelled or is unknown: see
greenq.cli_job); 2 bad usage or input (click's own, bad JSON, bad task
file); 3 worker children kept dying at boot; 124 `wait` timed out; 130
interrupted (Ctrl-C)."""

from __future__ import annotations

import sys

# The options the group takes before the sub-command's name, with a value.
_GROUP_VALUE_OPTIONS = ("--redis-url", "--namespace", "--queue")


def _sub_command(argv: list[str]) -> str | None:
    """The sub-command's name in `argv`, past the common options before it."""
    args = iter(argv)
    for arg in args:
        if arg in _GROUP_VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


# `greenq run`, `demo` and `web` run greenlets: patch before anything else
# imports socket, ssl or threading's locks.
if _sub_command(sys.argv[1:]) in ("run", "demo", "web"):
    from gevent import monkey

    monkey.patch_all()

import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

import click  # noqa: E402

from . import config  # noqa: E402
from .errors import GreenQError, ParamsError, TaskDefinitionError  # noqa: E402

log = logging.getLogger("greenq.cli")

EXIT_RUNTIME, EXIT_USAGE, EXIT_BOOT = 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command Ctrl-C stopped


# The common options: option, parameter, environment variables, default, help.
COMMON_OPTIONS = (
    ("--redis-url", "redis_url", ("GREENQ_REDIS_URL", "REDIS_URL"), config.DEFAULT_REDIS_URL,
     "redis://, rediss:// or unix:// URL"),
    ("--namespace", "namespace", ("GREENQ_NAMESPACE",), config.DEFAULT_NAMESPACE, "Key prefix"),
    ("--queue", "queue_id", ("GREENQ_QUEUE",), config.DEFAULT_QUEUE_ID, "Queue id on that Redis"),
)


def _variables(names) -> str:
    return ", ".join("$" + name for name in names)


def group_options(group):
    """The common options before the sub-command's name (`greenq --namespace
    x stats`); they, then the environment, then the defaults fill in those
    not given after it."""
    for option, name, variables, default, text in reversed(COMMON_OPTIONS):
        group = click.option(option, name, envvar=list(variables), default=default,
                             show_default=True,
                             help=f"{text} (also {_variables(variables)}); the same option "
                                  "after the sub-command wins.")(group)
    return group


def common_options(command):
    """--redis-url/--namespace/--queue after the sub-command's name; those not
    given there come from before it, the environment, or the defaults."""
    for option, name, variables, default, text in reversed(COMMON_OPTIONS):
        command = click.option(option, name, default=None,
                               help=f"{text} (also before the sub-command, or "
                                    f"{_variables(variables)}).  [default: {default}]")(command)

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        before = click.get_current_context().find_root().params
        for _, name, *_ in COMMON_OPTIONS:
            if kwargs[name] is None:
                kwargs[name] = before[name]
        return _one_line_errors(command, *args, **kwargs)
    return guarded


def _one_line_errors(command, *args, **kwargs):
    import redis

    def settings() -> dict:
        return config.connection_kwargs(kwargs.get("redis_url") or config.DEFAULT_REDIS_URL, None)

    def where() -> str:
        return config.describe(settings())

    try:
        return command(*args, **kwargs)
    except redis.AuthenticationError:
        # redis-py's text depends on the handshake (HELLO or AUTH) and names
        # neither cause; say which credentials the URL gave, never their value.
        given = settings()
        if given.get("password") is None:
            reason = "the URL gives no password, and this Redis requires one"
        elif given.get("username"):
            reason = "Redis refused the user name and password in the URL (or the user is disabled)"
        else:
            reason = "Redis refused the password in the URL"
        click.echo(f"greenq: authentication failed at {where()}: {reason}", err=True)
        sys.exit(EXIT_RUNTIME)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        click.echo(f"greenq: cannot reach Redis at {where()}: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    except redis.exceptions.InvalidResponse as exc:
        # Something else listens there (an HTTP server, a wrong port).
        click.echo(f"greenq: the server at {where()} is not Redis: its reply is not "
                   f"the Redis protocol ({exc})", err=True)
        sys.exit(EXIT_RUNTIME)
    except redis.ResponseError as exc:
        click.echo(f"greenq: Redis refused: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    except (TaskDefinitionError, ParamsError, ValueError, TypeError) as exc:
        click.echo(f"greenq: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except GreenQError as exc:
        click.echo(f"greenq: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)


def count(number: int, noun: str) -> str:
    """"1 job", "2 jobs": a count with its noun."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def make_queue(redis_url, namespace, queue_id, **kwargs):
    from .queue import GreenQueue

    return GreenQueue(redis_url=redis_url, namespace=namespace, queue_id=queue_id, **kwargs)


def existing_queue(redis_url, namespace, queue_id):
    """A queue to read or administer; a one-line note on stderr when it was
    never used, the usual sign of a mistyped --namespace or --queue (whose
    counts would otherwise read as an idle queue)."""
    queue = make_queue(redis_url, namespace, queue_id)
    if not queue._partition_set().queue_exists():
        click.echo(f"greenq: note: queue {queue_id!r} of namespace {namespace!r} at "
                   f"{config.describe(queue.connection)} has never been used (no job, no worker); "
                   "check --namespace and --queue", err=True)
    return queue


class Group(click.Group):
    """click's group, but Ctrl-C exits 130 without click's "Aborted!"."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            pass
        except click.Abort as exc:  # a prompt turns Ctrl-C into Abort
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise
        if sys.stderr.isatty():
            click.echo(err=True)  # end the line the terminal's ^C is on
        sys.exit(EXIT_INTERRUPTED)


@click.group(cls=Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="greenq")
@group_options
def main(redis_url, namespace, queue_id):
    """greenq: a distributed job queue for gevent, backed by Redis.

    Jobs name a task and a resource; jobs of one resource run one at a time,
    in order, on any machine that reaches the Redis."""


@main.command()
@click.argument("tasks", nargs=-1, required=True)
@click.option("-c", "--children", "child_process_count", type=click.IntRange(0), default=0,
              show_default=True, help="Worker child processes (0: run jobs in this process).")
@click.option("-w", "--workers", "worker_count", type=click.IntRange(1),
              default=config.DEFAULT_WORKER_COUNT, show_default=True,
              help="Concurrent jobs (greenlets) per process.")
@click.option("--flush-stale-timeout", type=click.FloatRange(min=0, min_open=True),
              default=config.DEFAULT_FLUSH_STALE_TIMEOUT, show_default=True,
              help="At most this many seconds between scans for dead jobs.")
@click.option("--serializer", type=click.Choice(["msgpack", "json"]), default="msgpack",
              show_default=True,
              help="Params encoding of jobs submitted through this queue; workers read either.")
@click.option("--unknown-task-grace", type=click.FloatRange(min=0),
              default=config.DEFAULT_UNKNOWN_TASK_GRACE, show_default=True, metavar="SECONDS",
              help="Seconds a job of a task these workers do not know waits for a worker "
                   "that does (a rolling deploy), then fails; 0: fail at once.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
              case_sensitive=False), default="info", show_default=True,
              help="Lowest level logged to stderr (any case).")
@click.option("--wait-for-redis", "redis_wait", type=click.FloatRange(min=0), default=30.0,
              show_default=True, metavar="SECONDS",
              help="While Redis cannot be reached at start, try again (with back-off) for this "
                   "long before exiting with status 1; 0: exit at once.")
@click.option("--graceful-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="After SIGTERM/SIGINT, give jobs still running after this long back to the "
                   "queue, then exit 0 (set it under the SIGKILL grace of Docker or Kubernetes). "
                   "Default: wait for them.")
@click.option("--partitions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Spread a new queue over N hash tags (a Redis Cluster's masters share it). "
                   "Default: the number stored with the queue, or 1 for a new one.")
@click.option("--replicas", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="A finish counts once N replicas have it (Redis WAIT).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: one JSON object per line, with job_id, task and resource on job lines.")
@click.option("--otel", is_flag=False, flag_value="1", default=None, envvar="GREENQ_OTEL",
              metavar="[MODULE:FUNCTION]",
              help="Trace jobs with OpenTelemetry: each worker process sets up the SDK from "
                   "the OTEL_* variables, or calls MODULE:FUNCTION to do it  [env: $GREENQ_OTEL]")
@common_options
def run(tasks, child_process_count, worker_count, flush_stale_timeout, serializer,
        unknown_task_grace, log_level, redis_wait, graceful_timeout, partitions, replicas,
        log_format, otel, redis_url, namespace, queue_id):
    """Run workers for TASKS (modules or .py files) until SIGTERM/SIGINT.

    \b
    SIGTERM/SIGINT  graceful: stop fetching, running jobs finish (those
                    still running after --graceful-timeout go back), exit 0
    again           stop now: running jobs go back to the queue
    SIGHUP          replace children one by one, re-importing the tasks
    SIGTTIN/SIGTTOU one child more / less
    """
    from .runner import run_until_signalled, wait_for_redis

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `greenq run tasks` finds ./tasks.py, as `python -m` does

    from . import logs, tracing

    logs.setup(log_level, log_format)
    if otel:
        os.environ[tracing.ENV] = otel  # worker children set it up after they start
        if not child_process_count:
            try:
                tracing.setup_worker(otel)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--otel") from None
    queue = make_queue(redis_url, namespace, queue_id, child_process_count=child_process_count,
                       worker_count=worker_count, flush_stale_timeout=flush_stale_timeout,
                       serializer=serializer, unknown_task_grace=unknown_task_grace,
                       partitions=partitions, replicas=replicas)
    for spec in tasks:
        queue.register_task(spec)
    stopped = wait_for_redis(queue, redis_wait)
    sys.exit(stopped if stopped is not None else run_until_signalled(queue, graceful_timeout))


def _params(argument: str):
    """--params: JSON, or @FILE / - (stdin) holding JSON, as curl's -d takes."""
    where = "--params"
    if argument == "-":
        where, argument = "--params - (stdin)", sys.stdin.read()
    elif argument.startswith("@"):
        where, path = f"--params {argument}", argument[1:]
        try:
            with open(path, encoding="utf-8") as file:
                argument = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ParamsError(f"--params: cannot read {path}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        return json.loads(argument)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"{where} is not valid JSON: {exc}") from None


@main.command()
@click.argument("task_id")
@click.option("--resource", default=None, help="Resource id: its jobs run one at a time, in order.")
@click.option("--params", default="null", show_default=True,
              help="Params as JSON, or @FILE to read them from a file, or - from stdin.")
@click.option("--retries", type=click.IntRange(0), default=0, show_default=True,
              help="How many times a failed job is tried again before it goes to the failed queue.")
@click.option("--serializer", type=click.Choice(["msgpack", "json"]), default="msgpack",
              show_default=True, help="Encoding of the params in Redis (workers read either).")
@click.option("--job-id", default=None, metavar="ID",
              help="The job's id, chosen by you: while a job with this id exists (queued, running, "
                   "failed, or ended and kept), submitting it again adds nothing and prints the "
                   "same id.  [default: a new random id]")
@click.option("--delay", type=float, default=None, metavar="SECONDS",
              help="Run the job this long from now (by Redis' clock); it takes its place in its "
                   "resource's order only then.")
@click.option("--coalesce", is_flag=True,
              help="Needs --resource. When that resource's newest job not started yet is of the "
                   "same task, replace its params and retries and print its id instead of "
                   "queueing another (latest wins).")
@click.option("--wait", "wait_", is_flag=True,
              help="Wait for the job to end, then show it and exit as `greenq wait` does (0 "
                   "succeeded, 1 failed or cancelled, 124 on --timeout).")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --wait: give up waiting after this long (exit 124; the job stays queued).")
@click.option("--json", "as_json", is_flag=True,
              help="With --wait: the ended job as one JSON object.")
@common_options
def submit(task_id, resource, params, retries, serializer, job_id, delay, coalesce, wait_,
           timeout, as_json, redis_url, namespace, queue_id):
    """Submit one job; prints its id (with --wait: the ended job)."""
    if coalesce and resource is None:
        raise ParamsError("--coalesce needs --resource: it replaces the newest job of that "
                          "resource that has not started yet")
    for option, given in (("--timeout", timeout is not None), ("--json", as_json)):
        if given and not wait_:
            raise ParamsError(f"{option} goes with --wait")
    decoded = _params(params)
    queue = make_queue(redis_url, namespace, queue_id, serializer=serializer)
    submitted = queue.submit_job(task_id, resource_id=resource, params=decoded, retries=retries,
                                 delay=delay, job_id=job_id, coalesce=coalesce)
    if not wait_:
        click.echo(submitted)
        return
    from .cli_job import wait_and_show

    try:
        wait_and_show(queue, submitted, timeout, as_json)
    except KeyboardInterrupt:
        click.echo(f"greenq: job {submitted} stays queued; `greenq wait {submitted}` waits again",
                   err=True)
        raise


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--watch", is_flag=True,
              help="Redraw the counts and their rates (jobs/s) in place until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="With --watch: seconds between draws.  [default: 2]")
@common_options
def stats(as_json, watch, interval, redis_url, namespace, queue_id):
    """Counts of pending, active, waiting and failed jobs."""
    if watch:
        if as_json:
            raise ParamsError("--json and --watch do not go together: --watch draws a table")
        from .cli_watch import watch as watch_stats

        sys.exit(watch_stats(existing_queue(redis_url, namespace, queue_id),
                             2.0 if interval is None else interval))
    if interval is not None:
        raise ParamsError("--interval goes with --watch")
    numbers = existing_queue(redis_url, namespace, queue_id).stats()
    if as_json:
        click.echo(json.dumps(numbers))
    else:
        for name, value in numbers.items():
            click.echo(f"{name:<17} {value}")


@main.group()
def failed():
    """The failed queue: list, retry or delete its jobs."""


def _filters(ids: tuple[str, ...], task: str | None) -> dict:
    """--id (repeatable) and --task as the failed-queue calls take them."""
    if "" in ids or task == "":
        raise ParamsError(f"{'--id' if '' in ids else '--task'} must not be empty")
    return {"job_ids": list(ids) if ids else None, "task_id": task}


def _filter_options(command):
    command = click.option("--task", default=None, metavar="TASK_ID",
                           help="Only the failed jobs of this task.")(command)
    return click.option("--id", "ids", multiple=True, metavar="JOB_ID",
                        help="Only this failed job (repeat for several); with --task, only "
                             "those of that task. An id not in the failed queue is left alone.")(
        command)


def _not_all(acted: int, filters: dict) -> None:
    """A note on stderr when some ids given were not acted on."""
    given = len(set(filters["job_ids"] or ()))
    if acted < given:
        task = filters["task_id"]
        click.echo(f"greenq: note: {given - acted} of the {count(given, 'id')} given "
                   f"{'was' if given - acted == 1 else 'were'} not in the failed queue"
                   f"{f' with task {task!r}' if task else ''}", err=True)


@failed.command("list")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True,
              help="Failed jobs listed at most (the oldest).")
@click.option("--task", default=None, metavar="TASK_ID", help="Only the failed jobs of this task.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("-v", "--verbose", is_flag=True,
              help="Each job's whole traceback, not only the error's last line.")
@common_options
def failed_list(limit, task, as_json, verbose, redis_url, namespace, queue_id):
    """Failed jobs, oldest first."""
    _filters((), task)
    jobs = existing_queue(redis_url, namespace, queue_id).failed_jobs(limit, task_id=task)
    if not jobs and not as_json:
        click.echo("no failed jobs" + (f" of task {task!r}" if task else ""))
    for job in jobs:
        if as_json:
            params = job.params if not isinstance(job.params, bytes) else repr(job.params)
            click.echo(json.dumps({"id": job.id, "task_id": job.task_id,
                                   "resource_id": job.resource_id, "params": params,
                                   "retries": job.retries, "attempts": job.attempts,
                                   "error": job.error}, default=repr))
            continue
        error = (job.error or "").strip().splitlines()
        header = f"{job.id}  {job.task_id}  resource={job.resource_id}  attempts={job.attempts}"
        if verbose:
            click.echo(header)
            for line in error:
                click.echo("    " + line)
        else:
            click.echo(f"{header}  {error[-1] if error else ''}")


@failed.command("retry")
@_filter_options
@common_options
def failed_retry(ids, task, redis_url, namespace, queue_id):
    """Move failed jobs back to the queue (behind their resource's holder):
    every one, or those given by --id and/or --task."""
    filters = _filters(ids, task)
    retried = existing_queue(redis_url, namespace, queue_id).retry_failed_jobs(**filters)
    click.echo(f"{count(retried, 'job')} retried")
    _not_all(retried, filters)


@failed.command("delete")
@_filter_options
@click.option("-y", "--yes", is_flag=True,
              help="Delete without asking (needed when no terminal is attached). --id deletes "
                   "the jobs named without asking.")
@common_options
def failed_delete(ids, task, yes, redis_url, namespace, queue_id):
    """Delete failed jobs: those given by --id (and --task), or every one
    (of --task's task), after a yes at the terminal (or --yes)."""
    filters = _filters(ids, task)
    which = "every failed job" + (f" of task {task!r}" if task else "")
    yes = yes or bool(ids)  # jobs named one by one: nothing to confirm
    if not yes and not sys.stdin.isatty():
        click.echo(f"greenq: failed delete deletes {which} and no terminal is attached "
                   "to ask: give --yes", err=True)
        sys.exit(EXIT_USAGE)
    queue = existing_queue(redis_url, namespace, queue_id)
    if not yes:
        failed_now = queue.stats()["failed"]
        if failed_now == 0:
            click.echo("no failed jobs")
            return
        question = (f"Delete the {count(failed_now, 'failed job')} of queue " if not task else
                    f"Delete the failed jobs of task {task!r} (of {failed_now} failed) in queue ")
        if not click.confirm(f"{question}{queue_id!r} in namespace {namespace!r}?", err=True):
            click.echo("greenq: nothing deleted", err=True)
            sys.exit(EXIT_RUNTIME)
    deleted = queue.delete_failed_jobs(**filters)
    click.echo(f"{count(deleted, 'job')} deleted")
    _not_all(deleted, filters)


@main.command("flush-stale")
@common_options
def flush_stale(redis_url, namespace, queue_id):
    """Reclaim jobs whose process stopped heartbeating (retry or fail them)."""
    flushed = existing_queue(redis_url, namespace, queue_id).force_flush_stale_jobs()
    click.echo(f"{count(flushed, 'stale job')} flushed")


@main.command()
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="Running jobs and locked resources listed at most, of each.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def inspect(limit, as_json, redis_url, namespace, queue_id):
    """Live worker processes (host, pid, role, busy/capacity, last heartbeat,
    uptime), running jobs, oldest first (process, task, resource, age, last
    heartbeat), and locked resources with how many jobs wait behind each."""
    report = existing_queue(redis_url, namespace, queue_id)._partition_set().inspect(limit)
    report["running"].sort(key=lambda job: -job["age"])  # oldest first: the likeliest stuck
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"worker processes ({len(report['processes'])} live, heard from within "
               f"{config.PROCESS_GONE_AFTER:g}s):")
    for proc in report["processes"]:
        role = proc.get("role", "?")
        if role == "child":
            role = f"child {proc.get('index')} of master {proc.get('master')}"
        uptime = "" if proc["age"] is None else f"  up={proc['age']:.1f}s"
        click.echo(f"  {proc.get('host')} pid {proc.get('pid')}  {role}  "
                   f"busy={proc['busy']}/{proc.get('capacity')}  "
                   f"heartbeat={proc['last_heartbeat']:.1f}s ago{uptime}  {proc['id']}")
    click.echo(f"running jobs ({len(report['running'])} shown):")
    for job in report["running"]:
        click.echo(f"  {job['id']}  {job['task']}  resource={job['resource']}  "
                   f"age={job['age']:.1f}s  heartbeat={job['last_heartbeat']:.1f}s ago  "
                   f"(timeout {job['timeout']:.1f}s)  {job['process']}")
    click.echo(f"locked resources ({len(report['locked'])} shown):")
    for lock in report["locked"]:
        click.echo(f"  {lock['resource']}  held by {lock['holder']}  {lock['waiting']} waiting")


@main.command()
@click.option("--jobs", type=click.IntRange(1), default=10_000, show_default=True,
              help="Jobs to submit.")
@click.option("--resources", type=click.IntRange(1), default=100, show_default=True,
              help="Resources the jobs are spread over; each runs its jobs one at a time.")
@click.option("-c", "--children", type=click.IntRange(1), default=2, show_default=True,
              help="Worker child processes.")
@click.option("-w", "--workers", type=click.IntRange(1), default=None,
              help="Concurrent jobs per child.  [default: resources / children, rounded up: "
                   "no more jobs can run at once]")
@click.option("--install-redis/--no-install-redis", default=True, show_default=True,
              help="Install redis-server with apt-get when none is reachable or installed.")
@common_options
def demo(jobs, resources, children, workers, install_redis, redis_url, namespace, queue_id):
    """Run I/O-bound jobs through worker children with a live progress bar,
    then prove the resource lock held. Uses the Redis at --redis-url, or a
    throwaway redis-server when none answers, and a fresh namespace unless
    --namespace names one (whose queue must be empty: the demo deletes its
    keys when it ends)."""
    from .demo import run_demo

    if workers is None:
        workers = -(-resources // children)  # more would idle: a resource runs one job at a time
    ctx = click.get_current_context()
    if ctx.params["namespace"] is None and ctx.find_root().get_parameter_source("namespace") \
            is click.core.ParameterSource.DEFAULT:
        namespace = None  # not given: a fresh namespace, not everyone's default one
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s greenq[%(process)d] %(levelname)s %(name)s: %(message)s")
    sys.exit(run_demo(jobs=jobs, resources=resources, children=children, workers=workers,
                      install_redis=install_redis, redis_url=redis_url, queue_id=queue_id,
                      namespace=namespace))


# `greenq job`, `cancel` and `wait`, in a module of their own.
from .cli_job import COMMANDS as _JOB_COMMANDS  # noqa: E402

for _command in _JOB_COMMANDS:
    main.add_command(_command)

# `greenq schedule add|list|remove`, in a module of its own.
from .cli_schedule import COMMANDS as _SCHEDULE_COMMANDS  # noqa: E402

for _command in _SCHEDULE_COMMANDS:
    main.add_command(_command)

# `greenq web`, with the dashboard it serves.
from .web.command import COMMANDS as _WEB_COMMANDS  # noqa: E402

for _command in _WEB_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
