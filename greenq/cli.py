"""The `greenq` command. Exit status: 0 ok; 1 Redis unreachable (or not
Redis at that address, or refusing the password) or another runtime
failure; 2 bad usage or input (click's own, bad JSON, bad task file); 3
worker children kept dying at boot."""

from __future__ import annotations

import sys

# `greenq run` and `greenq demo` run greenlets: patch before anything else
# imports socket, ssl or threading's locks.
if len(sys.argv) > 1 and sys.argv[1] in ("run", "demo"):
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


def common_options(command):
    """--redis-url/--namespace/--queue, after every sub-command's name."""
    command = click.option("--queue", "queue_id", default=config.DEFAULT_QUEUE_ID, show_default=True,
                           help="Queue id on that Redis.")(command)
    command = click.option("--namespace", default=config.DEFAULT_NAMESPACE, show_default=True,
                           help="Key prefix.")(command)
    command = click.option("--redis-url", envvar=["GREENQ_REDIS_URL", "REDIS_URL"],
                           default=config.DEFAULT_REDIS_URL, show_default=True,
                           help="redis://, rediss:// or unix:// URL "
                                "(also $GREENQ_REDIS_URL, $REDIS_URL).")(command)

    @functools.wraps(command)
    def guarded(*args, **kwargs):
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


def make_queue(redis_url, namespace, queue_id, **kwargs):
    from .queue import GreenQueue

    return GreenQueue(redis_url=redis_url, namespace=namespace, queue_id=queue_id, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="greenq")
def main():
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
              show_default=True)
@click.option("--unknown-task-grace", type=click.FloatRange(min=0),
              default=config.DEFAULT_UNKNOWN_TASK_GRACE, show_default=True,
              help="Seconds a job of a task these workers do not know waits for a worker "
                   "that does (a rolling deploy), then fails; 0: fail at once.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
              case_sensitive=False), default="INFO", show_default=True)
@common_options
def run(tasks, child_process_count, worker_count, flush_stale_timeout, serializer,
        unknown_task_grace, log_level, redis_url, namespace, queue_id):
    """Run workers for TASKS (modules or .py files) until SIGTERM/SIGINT.

    \b
    SIGTERM/SIGINT  graceful: stop fetching, running jobs finish, exit 0
    again           stop now: running jobs go back to the queue
    SIGHUP          replace children one by one, re-importing the tasks
    SIGTTIN/SIGTTOU one child more / less
    """
    from .runner import run_until_signalled

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `greenq run tasks` finds ./tasks.py, as `python -m` does

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s greenq[%(process)d] %(levelname)s %(name)s: %(message)s")
    queue = make_queue(redis_url, namespace, queue_id, child_process_count=child_process_count,
                       worker_count=worker_count, flush_stale_timeout=flush_stale_timeout,
                       serializer=serializer, unknown_task_grace=unknown_task_grace)
    for spec in tasks:
        queue.register_task(spec)
    sys.exit(run_until_signalled(queue))


@main.command()
@click.argument("task_id")
@click.option("--resource", default=None, help="Resource id: its jobs run one at a time, in order.")
@click.option("--params", default="null", show_default=True, help="Params as JSON.")
@click.option("--retries", type=click.IntRange(0), default=0, show_default=True)
@click.option("--serializer", type=click.Choice(["msgpack", "json"]), default="msgpack",
              show_default=True)
@common_options
def submit(task_id, resource, params, retries, serializer, redis_url, namespace, queue_id):
    """Submit one job; prints its id."""
    try:
        decoded = json.loads(params)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"--params is not valid JSON: {exc}") from None
    queue = make_queue(redis_url, namespace, queue_id, serializer=serializer)
    click.echo(queue.submit_job(task_id, resource_id=resource, params=decoded, retries=retries))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def stats(as_json, redis_url, namespace, queue_id):
    """Counts of pending, active, waiting and failed jobs."""
    numbers = make_queue(redis_url, namespace, queue_id).stats()
    if as_json:
        click.echo(json.dumps(numbers))
    else:
        for name, value in numbers.items():
            click.echo(f"{name:<17} {value}")


@main.group()
def failed():
    """The failed queue: list, retry or delete its jobs."""


@failed.command("list")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@common_options
def failed_list(limit, as_json, redis_url, namespace, queue_id):
    """Failed jobs, oldest first."""
    for job in make_queue(redis_url, namespace, queue_id).failed_jobs(limit):
        if as_json:
            params = job.params if not isinstance(job.params, bytes) else repr(job.params)
            click.echo(json.dumps({"id": job.id, "task_id": job.task_id,
                                   "resource_id": job.resource_id, "params": params,
                                   "retries": job.retries, "attempts": job.attempts,
                                   "error": job.error}, default=repr))
        else:
            last_line = (job.error or "").strip().splitlines()[-1:] or [""]
            click.echo(f"{job.id}  {job.task_id}  resource={job.resource_id}  "
                       f"attempts={job.attempts}  {last_line[0]}")


@failed.command("retry")
@common_options
def failed_retry(redis_url, namespace, queue_id):
    """Move every failed job back to the queue."""
    click.echo(f"{make_queue(redis_url, namespace, queue_id).retry_failed_jobs()} jobs retried")


@failed.command("delete")
@common_options
def failed_delete(redis_url, namespace, queue_id):
    """Delete every failed job."""
    click.echo(f"{make_queue(redis_url, namespace, queue_id).delete_failed_jobs()} jobs deleted")


@main.command("flush-stale")
@common_options
def flush_stale(redis_url, namespace, queue_id):
    """Reclaim jobs whose process stopped heartbeating (retry or fail them)."""
    click.echo(f"{make_queue(redis_url, namespace, queue_id).force_flush_stale_jobs()} stale jobs flushed")


@main.command()
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common_options
def inspect(limit, as_json, redis_url, namespace, queue_id):
    """Running jobs (process, task, resource, age, last heartbeat) and locked
    resources with how many jobs wait behind each."""
    report = make_queue(redis_url, namespace, queue_id).broker.inspect(limit)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"running jobs ({len(report['running'])} shown):")
    for job in report["running"]:
        click.echo(f"  {job['id']}  {job['task']}  resource={job['resource']}  "
                   f"age={job['age']:.1f}s  heartbeat={job['last_heartbeat']:.1f}s ago  "
                   f"(timeout {job['timeout']:.1f}s)  {job['process']}")
    click.echo(f"locked resources ({len(report['locked'])} shown):")
    for lock in report["locked"]:
        click.echo(f"  {lock['resource']}  held by {lock['holder']}  {lock['waiting']} waiting")


@main.command()
@click.option("--jobs", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--resources", type=click.IntRange(1), default=100, show_default=True)
@click.option("-c", "--children", type=click.IntRange(1), default=2, show_default=True)
@click.option("-w", "--workers", type=click.IntRange(1), default=200, show_default=True)
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

    if click.get_current_context().get_parameter_source("namespace") is \
            click.core.ParameterSource.DEFAULT:
        namespace = None  # not given: a fresh namespace, not everyone's default one
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s greenq[%(process)d] %(levelname)s %(name)s: %(message)s")
    sys.exit(run_demo(jobs=jobs, resources=resources, children=children, workers=workers,
                      install_redis=install_redis, redis_url=redis_url, queue_id=queue_id,
                      namespace=namespace))


if __name__ == "__main__":
    main()
