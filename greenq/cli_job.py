"""The `greenq job`, `greenq cancel` and `greenq wait` commands, and how
one job is shown (also by `greenq submit --wait`). greenq.cli adds them to
the `greenq` group.

Exit status, besides greenq.cli's: `job` 1 when the id is unknown; `cancel`
1 unless every id given was cancelled; `wait` (and `submit --wait`) 0 when
the job succeeded, 1 when it ended failed or cancelled or is unknown, 124
when the timeout passed first (as coreutils' `timeout` does)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .cli import EXIT_RUNTIME, common_options, existing_queue
from .errors import JobNotFoundError, WaitTimeout
from .job import Job

EXIT_TIMEOUT = 124  # wait: the job had not ended when the timeout passed


def job_fields(job: Job) -> dict[str, Any]:
    """The Job's attributes, as `--json` prints them."""
    return {"id": job.id, "task_id": job.task_id, "resource_id": job.resource_id,
            "state": job.state, "params": job.params, "result": job.result,
            "retries": job.retries, "attempts": job.attempts, "error": job.error,
            "fencing_token": job.fencing_token}


def _value(value: Any) -> str:
    # JSON, as --params takes it; bytes (msgpack carries them) as Python shows them.
    return json.dumps(value, default=repr, ensure_ascii=False)


def show_job(job: Job, as_json: bool) -> None:
    """One job on stdout: a JSON object, or a line per attribute with the
    error's whole traceback indented below its header."""
    if as_json:
        click.echo(json.dumps(job_fields(job), default=repr))
        return
    for name, value in (("id", job.id), ("task", job.task_id),
                        ("resource", job.resource_id if job.resource_id is not None else "-"),
                        ("state", job.state), ("attempts", job.attempts),
                        ("retries left", job.retries), ("params", _value(job.params)),
                        ("result", _value(job.result))):
        click.echo(f"{name:<13}{value}")
    error = (job.error or "").rstrip().splitlines()
    if not error:
        click.echo(f"{'error':<13}-")
        return
    click.echo("error")
    for line in error:
        click.echo("    " + line)


def _not_found(job_id: str) -> None:
    click.echo(f"greenq: no job {job_id!r} (unknown id, or its record expired or was deleted)",
               err=True)
    sys.exit(EXIT_RUNTIME)


def wait_and_show(queue, job_id: str, timeout: float | None, as_json: bool) -> None:
    """`greenq wait`: block until the job ended, show it, exit with its
    outcome (0 succeeded, 1 failed or cancelled or unknown, 124 timeout)."""
    try:
        job = queue.wait(job_id, timeout=timeout)
    except JobNotFoundError:
        _not_found(job_id)
    except WaitTimeout:
        now = queue.get_job(job_id)
        where = f"it is {now.state}" if now is not None else "its record is gone"
        click.echo(f"greenq: job {job_id!r} has not ended within {timeout:g} s ({where}); "
                   f"`greenq wait {job_id}` waits again", err=True)
        sys.exit(EXIT_TIMEOUT)
    show_job(job, as_json)
    sys.exit(0 if job.state == "succeeded" else EXIT_RUNTIME)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the job's attributes.")
@common_options
def job(job_id, as_json, redis_url, namespace, queue_id):
    """Show one job as Redis has it now: task, resource, state, attempts,
    retries left, params, result, error. Exit 1 when the id is unknown (or
    its record expired)."""
    found = existing_queue(redis_url, namespace, queue_id).get_job(job_id)
    if found is None:
        _not_found(job_id)
    show_job(found, as_json)


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@common_options
def cancel(job_ids, redis_url, namespace, queue_id):
    """Cancel jobs: one not started yet never runs; a running one is stopped
    within about 2 s. One line per id; exit 0 when every one was cancelled,
    1 otherwise."""
    from .queue import _check_id

    for index, job_id in enumerate(job_ids):  # all checked before any is cancelled
        _check_id(job_id, "JOB_ID" if len(job_ids) == 1 else f"JOB_ID {index + 1}")
    queue = existing_queue(redis_url, namespace, queue_id)
    cancelled = 0
    for job_id in job_ids:
        if queue.cancel(job_id):
            cancelled += 1
            click.echo(f"{job_id} cancelled")
        else:
            click.echo(f"{job_id} not cancelled (already ended or unknown)")
    sys.exit(0 if cancelled == len(job_ids) else EXIT_RUNTIME)


@click.command()
@click.argument("job_id")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up after this long: exit 124, the job untouched.  [default: no limit]")
@click.option("--json", "as_json", is_flag=True, help="The ended job as one JSON object.")
@common_options
def wait(job_id, timeout, as_json, redis_url, namespace, queue_id):
    """Wait until a job has ended (succeeded, failed with no retry left, or
    cancelled), then show it as `greenq job` does. Exit 0 when it succeeded,
    1 when it failed, was cancelled or is unknown, 124 on --timeout."""
    wait_and_show(existing_queue(redis_url, namespace, queue_id), job_id, timeout, as_json)


COMMANDS = (job, cancel, wait)
