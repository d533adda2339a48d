"""The `greenq schedule add|list|remove` commands. greenq.cli adds the
group to the `greenq` command.

Exit status, besides greenq.cli's: `remove` 1 when there was no such
schedule; bad input (cron, time zone, every, params) 2."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import click

from .cli import EXIT_RUNTIME, _params, common_options, existing_queue, make_queue
from .errors import ParamsError


@click.group()
def schedule():
    """Schedules: jobs submitted on a cron expression or every N seconds by
    every running `greenq run` of the queue, exactly once per fire time."""


@schedule.command("add")
@click.argument("name")
@click.argument("task_id")
@click.option("--cron", default=None, metavar="EXPR",
              help="Five-field cron expression (minute hour day month weekday), in --tz.")
@click.option("--every", type=float, default=None, metavar="SECONDS",
              help="Fire every this many seconds (at least 1).")
@click.option("--resource", default=None,
              help="Resource the runs hold.  [default: schedule:NAME, so runs never overlap]")
@click.option("--params", default="null", show_default=True,
              help="Params as JSON, or @FILE to read them from a file, or - from stdin.")
@click.option("--retries", type=click.IntRange(0), default=0, show_default=True,
              help="How many times a failed run is tried again.")
@click.option("--tz", default="UTC", show_default=True,
              help="IANA time zone the cron expression is read in (e.g. Europe/Berlin).")
@common_options
def schedule_add(name, task_id, cron, every, resource, params, retries, tz, redis_url, namespace,
                 queue_id):
    """Create or replace schedule NAME: a job of TASK_ID on --cron or --every.
    Replacing it with the same timing keeps its next fire time."""
    if (cron is None) == (every is None):
        raise ParamsError("give exactly one of --cron EXPR or --every SECONDS")
    queue = make_queue(redis_url, namespace, queue_id)
    queue.add_schedule(name, task_id, cron=cron, every=every, resource_id=resource,
                       params=_params(params), retries=retries, tz=tz)
    next_ms = queue._partition_set().next_fire_ms(name)
    if next_ms is None:  # removed by someone else meanwhile
        click.echo(f"schedule {name} added")
        return
    click.echo(f"schedule {name} added; next run {_when(next_ms / 1000)}")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _timing(entry: dict) -> str:
    if entry["cron"] is not None:
        return f"cron {entry['cron']} {entry['tz']}"
    return f"every {entry['every']:g}s"


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON list of the schedules (the dicts of GreenQueue.schedules()).")
@common_options
def schedule_list(as_json, redis_url, namespace, queue_id):
    """Schedules, soonest first: timing, task, resource, next and last run."""
    entries = existing_queue(redis_url, namespace, queue_id).schedules()
    if as_json:
        click.echo(json.dumps(entries, default=repr))
        return
    if not entries:
        click.echo("no schedules")
        return
    rows = [("NAME", "WHEN", "TASK", "RESOURCE", "NEXT RUN", "LAST RUN")]
    for entry in entries:
        rows.append((entry["name"], _timing(entry), entry["task_id"],
                     entry["resource_id"] or f"(schedule:{entry['name']})",
                     _when(entry["next_run"]), _when(entry["last_run"])))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        click.echo("  ".join([*cells, row[-1]]))


@schedule.command("remove")
@click.argument("name")
@common_options
def schedule_remove(name, redis_url, namespace, queue_id):
    """Remove schedule NAME (jobs it already submitted stay). Exit 1 when
    there was no such schedule."""
    if existing_queue(redis_url, namespace, queue_id).remove_schedule(name):
        click.echo(f"schedule {name} removed")
        return
    click.echo(f"greenq: no schedule {name!r}", err=True)
    sys.exit(EXIT_RUNTIME)


COMMANDS = (schedule,)
