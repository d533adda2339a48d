"""Schedules: argument checks (nothing written), storage round trip, the
fire times (DST included), and firing through Redis: once per fire time,
never overlapping, missed fires coalesced."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import gevent
import pytest

from conftest import wait_until
from greenq import ParamsError
from greenq.queue import GreenQueue
from greenq.scheduler import Scheduler
from greenq.schedules import check_timing, next_cron_fire_ms, next_fire_ms

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


def utc_ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def fires(expr: str, after_ms: int, count: int, tz: ZoneInfo = BERLIN) -> list[int]:
    found, at = [], after_ms
    for _ in range(count):
        at = next_cron_fire_ms(expr, tz, at)
        found.append(at)
    return found


def as_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


# -- fire times, no Redis -----------------------------------------------------
# Europe/Berlin 2026: clocks go forward on 29 March at 02:00 CET (01:00 UTC)
# to 03:00 CEST, and back on 25 October at 03:00 CEST (01:00 UTC) to 02:00 CET.


def test_a_wall_time_that_does_not_exist_fires_at_the_next_valid_minute():
    first, second = fires("30 2 * * *", utc_ms(2026, 3, 28, 12, 0), 2)
    assert as_utc(first) == datetime(2026, 3, 29, 1, 0)   # 03:00 CEST, the first minute after the gap
    assert as_utc(second) == datetime(2026, 3, 30, 0, 30)  # 02:30 CEST the next day


def test_several_skipped_minutes_fire_once_at_the_end_of_the_gap():
    got = [as_utc(ms) for ms in fires("*/15 * * * *", utc_ms(2026, 3, 29, 0, 40), 3)]
    # 01:45 CET, then 02:00..02:45 (all skipped) fire once at 03:00 CEST, then 03:15 CEST
    assert got == [datetime(2026, 3, 29, 0, 45), datetime(2026, 3, 29, 1, 0),
                   datetime(2026, 3, 29, 1, 15)]


def test_a_wall_time_that_occurs_twice_fires_once_at_its_first_occurrence():
    first, second = fires("30 2 * * *", utc_ms(2026, 10, 24, 12, 0), 2)
    assert as_utc(first) == datetime(2026, 10, 25, 0, 30)   # 02:30 CEST, the first pass
    assert as_utc(second) == datetime(2026, 10, 26, 1, 30)  # 02:30 CET the next day: not 01:30 UTC on the 25th


def test_an_hourly_schedule_skips_the_repeated_hour():
    got = [as_utc(ms) for ms in fires("0 * * * *", utc_ms(2026, 10, 24, 22, 30), 4)]
    # 01:00 CEST, 02:00 CEST, (02:00 CET is the same wall time: not again), 03:00 CET, 04:00 CET
    assert got == [datetime(2026, 10, 24, 23, 0), datetime(2026, 10, 25, 0, 0),
                   datetime(2026, 10, 25, 2, 0), datetime(2026, 10, 25, 3, 0)]


def test_a_schedule_made_during_the_second_pass_waits_for_the_next_day():
    # 02:10 CET on the 25th (the second 02:10): 02:30 already fired in the first pass.
    after = utc_ms(2026, 10, 25, 1, 10)
    assert as_utc(next_cron_fire_ms("30 2 * * *", BERLIN, after)) == datetime(2026, 10, 26, 1, 30)


def test_every_wall_clock_minute_fires_at_most_once_over_a_whole_year():
    at, seen, last = utc_ms(2026, 1, 1), set(), 0
    end = utc_ms(2027, 1, 1)
    while at < end:
        at = next_cron_fire_ms("*/30 * * * *", BERLIN, at)
        wall = datetime.fromtimestamp(at / 1000, BERLIN).replace(tzinfo=None)
        assert wall not in seen and at > last
        seen.add(wall)
        last = at
    # 365 days of 48 wall times (from 01:30 on 1 January to 01:00 a year
    # later), each fired once: the two repeated in autumn were not fired
    # twice (asserted above), and the two that do not exist in spring (02:00,
    # 02:30) fired once, at 03:00, which matches too.
    assert len(seen) == 365 * 48 - 2


def test_every_keeps_its_rhythm_and_coalesces_missed_periods():
    timing = check_timing(None, 2, "UTC")
    assert next_fire_ms(timing, 10_000) == 12_000
    assert next_fire_ms(timing, 10_500, previous_ms=10_000) == 12_000
    assert next_fire_ms(timing, 17_300, previous_ms=10_000) == 18_000  # 12, 14, 16 s missed: one fire
    assert next_fire_ms(timing, 18_000, previous_ms=10_000) == 20_000  # strictly after now


# -- arguments ----------------------------------------------------------------

BAD = [
    ({"cron": "* * * *"}, "five fields"),
    ({"cron": "0 0 * * * *"}, "five fields"),
    ({"cron": "61 * * * *"}, "bad cron"),
    ({"cron": "0 0 31 4 *"}, "bad cron"),
    ({"cron": "@daily"}, "five fields"),
    ({"cron": "oops x y z w"}, "bad cron"),
    ({"cron": 5}, "cron must be a str"),
    ({"cron": "0 3 * * *", "tz": "Mars/Base"}, "unknown time zone"),
    ({"cron": "0 3 * * *", "tz": "../../etc/passwd"}, "unknown time zone"),
    ({"cron": "0 3 * * *", "tz": ""}, "tz must be"),
    ({"cron": "0 3 * * *", "tz": None}, "tz must be"),
    ({"every": 0}, "at least 1"),
    ({"every": 0.999}, "at least 1"),
    ({"every": -5}, "at least 1"),
    ({"every": math.inf}, "at least 1"),
    ({"every": math.nan}, "at least 1"),
    ({"every": True}, "number of seconds"),
    ({"every": "5"}, "number of seconds"),
    ({"every": 5, "cron": "* * * * *"}, "exactly one"),
    ({}, "exactly one"),
    ({"every": 5, "params": object()}, "params"),
    ({"every": 5, "params": {"s": {1, 2}}}, "params"),
    ({"every": 5, "retries": -1}, "retries"),
    ({"every": 5, "retries": True}, "retries"),
    ({"every": 5, "retries": 1.5}, "retries"),
    ({"every": 5, "resource_id": ""}, "resource_id"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[str(case[0]) for case in BAD])
def test_bad_arguments_raise_params_error_and_write_nothing(make_queue, r, namespace, kwargs,
                                                            message):
    queue = make_queue()
    with pytest.raises(ParamsError, match=message):
        queue.add_schedule("nightly", "echo", **kwargs)
    assert r.keys(f"{namespace}:*") == []


@pytest.mark.parametrize("name", ["", "x" * 513, 5, None])
def test_bad_names_and_task_ids_raise_params_error_and_write_nothing(make_queue, r, namespace,
                                                                      name):
    queue = make_queue()
    with pytest.raises(ParamsError):
        queue.add_schedule(name, "echo", every=5)
    with pytest.raises(ParamsError):
        queue.add_schedule("ok", name, every=5)
    assert r.keys(f"{namespace}:*") == []


# -- storage ------------------------------------------------------------------


def redis_now(r) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


def test_add_list_replace_and_remove_round_trip(make_queue, r, namespace):
    queue = make_queue()
    before = redis_now(r)
    queue.add_schedule("tick", "echo", every=30, params={"n": [1, 2]}, retries=2)
    queue.add_schedule("nightly", "echo", cron="0  3 * * *", tz="Europe/Berlin",
                       resource_id="db")
    by_name = {s["name"]: s for s in queue.schedules()}
    tick, nightly = by_name["tick"], by_name["nightly"]
    assert tick == {"name": "tick", "task_id": "echo", "cron": None, "every": 30.0, "tz": "UTC",
                    "resource_id": None, "params": {"n": [1, 2]}, "retries": 2,
                    "next_run": tick["next_run"], "last_run": None}
    assert before + 29 < tick["next_run"] < redis_now(r) + 31
    assert nightly["cron"] == "0 3 * * *" and nightly["every"] is None
    assert nightly["tz"] == "Europe/Berlin" and nightly["resource_id"] == "db"
    fire = datetime.fromtimestamp(nightly["next_run"], BERLIN)
    assert (fire.hour, fire.minute) == (3, 0) and nightly["next_run"] > before
    assert [s["name"] for s in queue.schedules()] == ["tick", "nightly"]  # soonest first

    # The same timing: next_run kept (a program re-adding its schedules at
    # every start does not push them back); the rest replaced.
    gevent.sleep(0.05)
    queue.add_schedule("tick", "echo", every=30, params="new")
    again = [s for s in queue.schedules() if s["name"] == "tick"][0]
    assert again["next_run"] == tick["next_run"] and again["params"] == "new"
    assert again["retries"] == 0
    # A new timing: a new next_run.
    queue.add_schedule("tick", "echo", every=60)
    moved = [s for s in queue.schedules() if s["name"] == "tick"][0]
    assert moved["every"] == 60.0 and moved["next_run"] > tick["next_run"] + 25

    assert queue.remove_schedule("tick") is True
    assert queue.remove_schedule("tick") is False
    assert [s["name"] for s in queue.schedules()] == ["nightly"]
    assert queue.remove_schedule("nightly") is True
    assert queue.schedules() == []
    # Only the number of partitions, stored at the queue's first use, stays.
    assert r.keys(f"{namespace}:*") == [f"{namespace}:{{default}}:partitions".encode()]


def test_schedules_work_in_a_thread_without_gevent_and_without_start(redis_url, namespace):
    # The test process is patched; a plain GreenQueue never started is what
    # a web app or a deploy script holds.
    queue = GreenQueue(redis_url=redis_url, namespace=namespace)
    queue.add_schedule("s", "echo", every=10)
    assert [s["name"] for s in queue.schedules()] == ["s"]
    assert queue.remove_schedule("s")
    queue.shutdown()


def next_spring_and_autumn_days(now: datetime) -> tuple[datetime, datetime]:
    """The next days (from `now`) on which Berlin's clocks go forward and back
    (the last Sundays of March and October)."""
    def last_sunday(year: int, month: int) -> datetime:
        day = datetime(year, month + 1, 1) - timedelta(days=1)
        return day - timedelta(days=(day.weekday() + 1) % 7)

    days = []
    for month in (3, 10):
        day = last_sunday(now.year, month)
        if day <= now.replace(tzinfo=None):
            day = last_sunday(now.year + 1, month)
        days.append(day)
    return days[0], days[1]


def test_next_run_through_redis_crosses_both_dst_changes_of_berlin(make_queue, r):
    queue = make_queue()
    spring, autumn = next_spring_and_autumn_days(datetime.fromtimestamp(redis_now(r), UTC))
    # 02:30 on the day clocks go forward does not exist: 03:00 CEST (01:00 UTC).
    queue.add_schedule("gap", "echo", cron=f"30 2 {spring.day} 3 *", tz="Europe/Berlin")
    # 02:30 on the day clocks go back occurs twice: the first, 02:30 CEST (00:30 UTC).
    queue.add_schedule("twice", "echo", cron=f"30 2 {autumn.day} 10 *", tz="Europe/Berlin")
    listed = {s["name"]: s["next_run"] for s in queue.schedules()}
    assert as_utc(int(listed["gap"] * 1000)) == spring.replace(hour=1, minute=0)
    assert as_utc(int(listed["twice"] * 1000)) == autumn.replace(hour=0, minute=30)


# -- firing -------------------------------------------------------------------


def record_params(redis_url: str, namespace: str, **extra) -> dict:
    return {"url": redis_url, "key": f"{namespace}:rec", **extra}


def test_every_one_second_fires_about_once_a_second_in_a_started_queue(
        make_queue, r, redis_url, namespace):
    queue = make_queue("sched_record")
    queue.start()
    queue.add_schedule("beat", "sched.record", every=1,
                       params=record_params(redis_url, namespace))
    wait_until(lambda: r.llen(f"{namespace}:rec:runs") >= 4, timeout=15)
    runs = [job.decode() for job in r.lrange(f"{namespace}:rec:runs", 0, -1)]
    fire_times = sorted(int(job.rsplit(":", 1)[1]) for job in runs)
    assert len(set(runs)) == len(runs)
    assert all(b - a == 1000 for a, b in zip(fire_times, fire_times[1:])), fire_times
    [beat] = queue.schedules()
    assert beat["last_run"] is not None and beat["next_run"] > beat["last_run"]


def test_runs_never_overlap_and_at_most_one_waits_behind_a_running_one(
        make_queue, r, redis_url, namespace):
    queue = make_queue("sched_record", worker_count=10)
    queue.start()
    queue.add_schedule("slow", "sched.record", every=1,
                       params=record_params(redis_url, namespace, sleep=2.5))
    wait_key = f"{namespace}:{{default}}:wait:schedule:slow"
    deadline = redis_now(r) + 7
    most_waiting = 0
    while redis_now(r) < deadline:
        most_waiting = max(most_waiting, r.llen(wait_key))
        assert queue.stats()["pending"] + r.llen(wait_key) <= 1
        gevent.sleep(0.05)
    runs = r.llen(f"{namespace}:rec:runs")
    assert int(r.get(f"{namespace}:rec:most_at_once")) == 1  # never two at once
    assert most_waiting == 1      # fires did arrive while one ran, and only one waited
    assert 2 <= runs <= 4         # 7 fire times, 2.5 s per run: later fires coalesced


def test_fires_missed_while_nothing_ran_give_one_job_on_resume(make_queue, r, namespace):
    queue = make_queue()
    queue.add_schedule("missed", "echo", every=1)
    [before] = queue.schedules()
    gevent.sleep(3.6)  # three or four fire times pass with no process running
    errors = []
    scheduler = Scheduler(queue.broker, lambda event, payload: errors.append(payload))
    scheduler.run_once()
    scheduler.run_once()
    assert scheduler.fired == 1 and errors == []
    stored = r.lrange(f"{namespace}:{{default}}:pending", 0, -1)
    assert stored == [f"sched:missed:{int(before['next_run'] * 1000)}".encode()]
    [after] = queue.schedules()
    now = redis_now(r)
    assert now < after["next_run"] <= now + 1
    # on the same grid as before
    assert round((after["next_run"] - before["next_run"]) * 1000) % 1000 == 0


def test_a_removed_schedule_fires_no_more(make_queue, r, namespace):
    queue = make_queue()
    queue.add_schedule("gone", "echo", every=1)
    gevent.sleep(1.2)
    queue.remove_schedule("gone")
    scheduler = Scheduler(queue.broker, lambda event, payload: None)
    scheduler.run_once()
    assert scheduler.fired == 0
    assert r.llen(f"{namespace}:{{default}}:pending") == 0


def test_two_schedulers_racing_for_one_occurrence_fire_it_once(make_queue, r, namespace):
    queue = make_queue()
    queue.add_schedule("race", "echo", every=1, resource_id="own")
    gevent.sleep(1.2)
    schedulers = [Scheduler(queue.broker, lambda event, payload: None) for _ in range(5)]
    gevent.joinall([gevent.spawn(s.run_once) for s in schedulers], raise_error=True)
    assert sum(s.fired for s in schedulers) == 1
    assert r.llen(f"{namespace}:{{default}}:pending") == 1


# -- fire_schedule.lua through its broker method --------------------------------


def stored_next_ms(queue, name: str) -> int:
    return int(queue.broker.shared.zscore(queue.keys.schedules, name))


def test_fire_schedule_fires_only_the_stored_occurrence_once_it_is_due(make_queue, r, namespace):
    queue = make_queue()
    queue.add_schedule("s", "echo", every=1, params={"p": 1})
    broker, timing = queue.broker, check_timing(None, 1, "UTC").fields()
    occurrence = stored_next_ms(queue, "s")
    now = broker.redis_now_ms()
    assert broker.fire_schedule("s", occurrence, occurrence + 1000, timing, "j1") == (-1, None)
    gevent.sleep((occurrence - now) / 1000 + 0.05)
    now = broker.redis_now_ms()
    # A next fire time Redis' clock has passed already: refused, to compute again.
    assert broker.fire_schedule("s", occurrence, now - 1, timing, "j1") == (-2, None)
    # Another occurrence than the stored one: not ours (someone fired it).
    assert broker.fire_schedule("s", occurrence - 1000, now + 1000, timing, "j0") == (0, None)
    # Another timing than the stored one: the schedule changed meanwhile.
    assert broker.fire_schedule("s", occurrence, now + 1000,
                                check_timing(None, 2, "UTC").fields(), "j1") == (0, None)
    assert r.keys(f"{namespace}:{{default}}:job:*") == []
    assert broker.fire_schedule("s", occurrence, now + 1000, timing, "j1") == (1, "j1")
    assert broker.fire_schedule("s", occurrence, now + 1000, timing, "j1") == (0, None)
    assert stored_next_ms(queue, "s") == now + 1000
    prefix = f"{namespace}:{{default}}:"
    record = r.hgetall(prefix + "job:j1")
    assert record[b"task"] == b"echo" and record[b"res"] == b"schedule:s"
    assert record[b"state"] == b"pending" and record[b"retries"] == b"0"
    assert r.lrange(prefix + "pending", 0, -1) == [b"j1"]
    assert r.hget(prefix + "locks", "schedule:s") == b"j1"
    assert queue.schedules()[0]["last_run"] >= occurrence / 1000


def test_a_fire_while_the_last_run_has_not_started_coalesces_into_it(make_queue, r, namespace):
    queue = make_queue()
    queue.add_schedule("s", "echo", every=1, params={"v": 1})
    broker, timing = queue.broker, check_timing(None, 1, "UTC").fields()
    first = stored_next_ms(queue, "s")
    gevent.sleep((first - broker.redis_now_ms()) / 1000 + 0.05)
    assert broker.fire_schedule("s", first, first + 1000, timing, "a")[0] == 1
    queue.add_schedule("s", "echo", every=1, params={"v": 2})  # same timing: only params change
    gevent.sleep((first + 1000 - broker.redis_now_ms()) / 1000 + 0.05)
    assert broker.fire_schedule("s", first + 1000, first + 2000, timing, "b") == (1, "a")
    prefix = f"{namespace}:{{default}}:"
    assert r.lrange(prefix + "pending", 0, -1) == [b"a"]
    assert not r.exists(prefix + "job:b")
    assert queue.get_job("a").params == {"v": 2}  # latest wins


def test_a_worker_child_leaves_firing_to_its_master(make_queue):
    # greenq.child marks its queue so; the master fires (test_schedule_masters).
    child = make_queue("echo")
    child._about = {"role": "child", "index": 0, "master": 1}
    child.start()
    assert child._scheduler is None
    alone = make_queue("echo")
    alone.start()
    assert alone._scheduler is not None
