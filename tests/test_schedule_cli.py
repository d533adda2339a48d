"""`greenq schedule add|list|remove`, run as a real subprocess against the
private redis-server."""

from __future__ import annotations

import json

import pytest

from test_cli import greenq, one_line_error


@pytest.fixture
def common(redis_url, namespace) -> list[str]:
    return ["--redis-url", redis_url, "--namespace", namespace]


def test_add_list_json_and_remove(common, r, namespace):
    added = greenq("schedule", "add", "nightly", "report", "--cron", "0 3 * * *",
                   "--tz", "Europe/Berlin", "--params", '{"to": ["ops"]}', "--retries", "2",
                   *common)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("schedule nightly added; next run ")
    assert added.stderr == ""
    assert greenq("schedule", "add", "tick", "ping", "--every", "5", "--resource", "db",
                  *common).returncode == 0

    table = greenq("schedule", "list", *common)
    assert table.returncode == 0 and table.stderr == ""
    header, first, second = table.stdout.splitlines()
    assert header.split() == ["NAME", "WHEN", "TASK", "RESOURCE", "NEXT", "RUN", "LAST", "RUN"]
    assert first.split()[:5] == ["tick", "every", "5s", "ping", "db"]
    assert second.split()[:7] == ["nightly", "cron", "0", "3", "*", "*", "*"]
    assert "Europe/Berlin" in second and "(schedule:nightly)" in second

    listed = json.loads(greenq("schedule", "list", "--json", *common).stdout)
    assert [entry["name"] for entry in listed] == ["tick", "nightly"]
    nightly = listed[1]
    assert set(nightly) >= {"name", "task_id", "cron", "every", "tz", "resource_id", "params",
                            "next_run", "last_run"}
    assert (nightly["task_id"], nightly["cron"], nightly["every"], nightly["tz"],
            nightly["resource_id"], nightly["params"], nightly["last_run"]) == \
        ("report", "0 3 * * *", None, "Europe/Berlin", None, {"to": ["ops"]}, None)
    assert listed[0]["every"] == 5.0 and listed[0]["resource_id"] == "db"

    removed = greenq("schedule", "remove", "tick", *common)
    assert (removed.returncode, removed.stdout) == (0, "schedule tick removed\n")
    again = greenq("schedule", "remove", "tick", *common)
    assert again.returncode == 1 and "no schedule 'tick'" in one_line_error(again)
    assert greenq("schedule", "remove", "nightly", *common).returncode == 0
    empty = greenq("schedule", "list", *common)
    assert empty.stdout == "no schedules\n"
    assert json.loads(greenq("schedule", "list", "--json", *common).stdout) == []


def test_common_options_may_come_before_the_sub_command(common, r, namespace):
    assert greenq(*common, "schedule", "add", "s", "t", "--every", "60").returncode == 0
    assert r.zcard(f"{namespace}:{{default}}:schedules") == 1


@pytest.mark.parametrize("args, message", [
    (["--cron", "0 3 * *"], "five fields"),
    (["--cron", "99 3 * * *"], "bad cron expression"),
    (["--every", "0.5"], "at least 1 second"),
    (["--every", "inf"], "at least 1 second"),
    (["--every", "5", "--cron", "* * * * *"], "exactly one of --cron"),
    ([], "exactly one of --cron"),
    (["--every", "5", "--tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
    (["--every", "5", "--params", "{nope"], "--params is not valid JSON"),
], ids=["four-fields", "bad-minute", "every-below-1", "every-inf", "both", "neither",
        "unknown-tz", "bad-json"])
def test_bad_input_is_one_clear_line_exit_2_and_writes_nothing(common, r, namespace, args,
                                                                message):
    result = greenq("schedule", "add", "bad", "task", *args, *common)
    assert result.returncode == 2
    assert message in one_line_error(result)
    assert r.keys(f"{namespace}:*") == []


def test_a_non_number_every_is_a_usage_error(common, r, namespace):
    result = greenq("schedule", "add", "bad", "task", "--every", "soon", *common)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert r.keys(f"{namespace}:*") == []
