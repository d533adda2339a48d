"""The job life cycle with real workers in this process: states, results,
result_ttl, cancel, job ids, coalescing and fencing tokens (issue 13)."""

from __future__ import annotations

import sys

import gevent
import pytest

import greenq
from conftest import wait_until

TERMINAL = ("succeeded", "failed", "cancelled")


def life():
    return sys.modules["greenq_tasks_life"]


@pytest.fixture
def events():
    return {name: [] for name in ("job_success", "job_fail", "job_retry", "job_cancel", "error")}


def listen(queue, events):
    for name, items in events.items():
        queue.on(name, items.append)


def state(queue, job_id):
    job = queue.get_job(job_id)
    return None if job is None else job.state


# -- states and results --------------------------------------------------------


def test_a_job_reads_pending_then_succeeded_with_its_result(make_queue):
    q = make_queue("life")
    job_id = q.submit_job("life.return", params={"value": {"a": [1, 2], "b": "x"}})
    job = q.get_job(job_id)
    assert job.state == "pending" and job.result is None and job.attempts == 0
    assert job.task_id == "life.return" and job.params == {"value": {"a": [1, 2], "b": "x"}}
    q.start()
    wait_until(lambda: state(q, job_id) == "succeeded")
    job = q.get_job(job_id)
    assert job.result == {"a": [1, 2], "b": "x"} and job.attempts == 1 and job.error is None
    assert job.fencing_token >= 1


def test_every_state_a_job_passes_reads_as_exactly_that_state(make_queue, r):
    q = make_queue("life", worker_count=1)
    holder = q.submit_job("life.block", resource_id="r", params={"seconds": 30})
    behind = q.submit_job("life.return", resource_id="r", params={"value": 1})
    assert state(q, holder) == "pending" and state(q, behind) == "waiting"
    q.start()
    wait_until(lambda: holder in life().started)
    assert state(q, holder) == "active" and state(q, behind) == "waiting"
    assert q.cancel(holder)
    wait_until(lambda: state(q, behind) == "succeeded", timeout=10)
    assert state(q, holder) == "cancelled"
    failing = q.submit_job("life.return", params={"unstorable": True})
    wait_until(lambda: state(q, failing) == "failed")


def test_an_unknown_id_reads_none_and_a_bad_id_is_refused(make_queue, r):
    q = make_queue()
    assert q.get_job("no-such-job") is None
    with pytest.raises(TypeError):
        q.get_job(7)
    with pytest.raises(greenq.ParamsError):
        q.get_job("")
    r.set(q.keys.job("junk"), "not a hash")
    with pytest.raises(greenq.JobDecodeError):
        q.get_job("junk")


def test_a_result_the_serializer_cannot_carry_fails_the_job_with_a_clear_text(make_queue, events):
    q = make_queue("life", serializer="json")
    listen(q, events)
    q.start()
    unstorable = q.submit_job("life.return", params={"unstorable": True})
    as_bytes = q.submit_job("life.return", params={"value": None, "big": 10})
    wait_until(lambda: state(q, unstorable) == "failed")
    job = q.get_job(unstorable)
    assert job.error.startswith("ParamsError: job " + unstorable) and "result" in job.error
    wait_until(lambda: state(q, as_bytes) == "succeeded")   # the worker goes on
    assert q.get_job(as_bytes).result == "x" * 10


def test_a_result_over_the_size_cap_fails_the_job(make_queue):
    q = make_queue("life", max_params_bytes=1000)
    q.start()
    big = q.submit_job("life.return", params={"big": 5000}, retries=1)
    wait_until(lambda: state(q, big) == "failed")
    job = q.get_job(big)
    assert "over the 1000-byte cap" in job.error and job.attempts == 2  # retried once, as a raise


def test_ended_records_expire_after_result_ttl_and_zero_deletes_them_at_once(make_queue, r):
    kept = make_queue("life", result_ttl=60)
    kept.start()
    job_id = kept.submit_job("life.return", params={"value": 5})
    wait_until(lambda: state(kept, job_id) == "succeeded")
    assert 55_000 < r.pttl(kept.keys.job(job_id)) <= 60_000
    short = make_queue("life", namespace=kept.namespace + "s", result_ttl=0.3)
    short.start()
    job_id = short.submit_job("life.return", params={"value": 5})
    wait_until(lambda: state(short, job_id) == "succeeded")
    wait_until(lambda: short.get_job(job_id) is None, timeout=5)
    gone = make_queue("life", namespace=kept.namespace + "z", result_ttl=0)
    gone.start()
    job_id = gone.submit_job("life.return", params={"value": 5})
    wait_until(lambda: gone.stats()["pending"] == 0 and gone.stats()["active"] == 0)
    wait_until(lambda: not r.exists(gone.keys.job(job_id)))


def test_failed_jobs_stay_whatever_the_result_ttl(make_queue, r):
    q = make_queue("life", result_ttl=0.2)
    q.start()
    job_id = q.submit_job("life.return", params={"unstorable": True})
    wait_until(lambda: state(q, job_id) == "failed")
    gevent.sleep(0.5)
    assert state(q, job_id) == "failed" and r.pttl(q.keys.job(job_id)) == -1


def test_result_ttl_is_checked(make_queue):
    for bad in (-1, float("inf"), "10", True):
        with pytest.raises(ValueError):
            make_queue(result_ttl=bad)


# -- cancel --------------------------------------------------------------------


def test_cancel_of_a_pending_job_means_it_never_runs(make_queue, events):
    q = make_queue("life")
    listen(q, events)
    job_id = q.submit_job("life.block", params={"seconds": 0})
    assert q.cancel(job_id) is True
    assert state(q, job_id) == "cancelled"
    assert q.cancel(job_id) is False                  # ended already
    assert q.stats()["pending"] == 0
    after = q.submit_job("life.return", params={"value": 1})
    q.start()
    wait_until(lambda: state(q, after) == "succeeded")
    assert job_id not in life().started and state(q, job_id) == "cancelled"
    assert events["job_cancel"] == []                 # it never ran: no process stopped it


def test_cancel_of_a_waiting_job_skips_it_and_the_resource_passes_on(make_queue, r):
    q = make_queue("life", worker_count=2)
    holder = q.submit_job("life.block", resource_id="r", params={"seconds": 0.5})
    skipped = q.submit_job("life.block", resource_id="r", params={"seconds": 0})
    last = q.submit_job("life.return", resource_id="r", params={"value": 2})
    assert q.cancel(skipped)
    assert q.stats()["waiting"] == 1
    q.start()
    wait_until(lambda: state(q, last) == "succeeded", timeout=10)
    assert skipped not in life().started and state(q, skipped) == "cancelled"
    assert r.hlen(q.keys.locks) == 0 and q.stats()["waiting"] == 0
    assert r.pttl(q.keys.job(skipped)) > 0            # its record expires now that it was skipped


def test_cancel_of_a_pending_holder_hands_its_resource_on_at_once(make_queue):
    q = make_queue("life")
    holder = q.submit_job("life.block", resource_id="r", params={"seconds": 0})
    behind = q.submit_job("life.return", resource_id="r", params={"value": 3})
    assert state(q, behind) == "waiting"
    assert q.cancel(holder)
    assert state(q, behind) == "pending"              # in the same script, not at the next fetch


def test_cancel_of_a_running_job_stops_it_and_passes_its_resource_on(make_queue, events, r):
    q = make_queue("life")
    listen(q, events)
    q.start()
    running = q.submit_job("life.block", resource_id="r", params={"seconds": 60}, retries=3)
    behind = q.submit_job("life.return", resource_id="r", params={"value": 4})
    wait_until(lambda: running in life().started)
    assert q.cancel(running) is True
    wait_until(lambda: life().ended.get(running) == "cancelled", timeout=5)
    wait_until(lambda: state(q, behind) == "succeeded", timeout=5)
    job = q.get_job(running)
    assert job.state == "cancelled" and job.retries == 3 and job.attempts == 1  # not retried
    assert [j.id for j in events["job_cancel"]] == [running]
    assert events["job_fail"] == [] and events["job_retry"] == []
    assert not r.exists(q.keys.cancels(q.process_id))


def test_a_task_that_swallows_the_cancel_still_ends_cancelled(make_queue, events):
    q = make_queue("life")
    listen(q, events)
    q.start()
    job_id = q.submit_job("life.stubborn", params={"seconds": 30, "linger": 2})
    wait_until(lambda: job_id in life().started)
    assert q.cancel(job_id) is True
    assert q.cancel(job_id) is True                   # still under way: the same answer
    wait_until(lambda: state(q, job_id) == "cancelled", timeout=5)
    assert life().ended[job_id] == "swallowed"
    assert q.get_job(job_id).result is None
    assert [j.id for j in events["job_cancel"]] == [job_id]


def test_cancel_of_an_unknown_or_ended_job_is_false_and_bad_ids_are_refused(make_queue):
    q = make_queue("life")
    assert q.cancel("no-such-job") is False
    q.start()
    done = q.submit_job("life.return", params={"value": 1})
    wait_until(lambda: state(q, done) == "succeeded")
    assert q.cancel(done) is False and state(q, done) == "succeeded"
    for bad, error in ((None, TypeError), ("", greenq.ParamsError), ("x" * 513, greenq.ParamsError)):
        with pytest.raises(error):
            q.cancel(bad)


def test_cancel_scans_nothing_in_a_queue_of_100000_jobs(make_queue, r):
    """O(log n): the cancel script touches one record, a hash and a counter;
    Redis' own command counts show no list read or LREM."""
    q = make_queue("life")
    ids = q.submit_jobs([{"task_id": "life.return", "resource_id": f"r{i % 10}"}
                         for i in range(100_000)])
    target = ids[50_000]                               # waiting behind its resource's holder
    r.config_resetstat()
    assert q.cancel(target)
    calls = {name: stats["calls"] for name, stats in r.info("commandstats").items()}
    scans = {"cmdstat_lrem", "cmdstat_lrange", "cmdstat_lindex", "cmdstat_lpos", "cmdstat_scan"}
    assert not scans & set(calls), calls
    assert state(q, target) == "cancelled" and q.stats()["waiting"] == 99_990 - 1


# -- job ids and coalescing ------------------------------------------------------


def test_a_job_id_submitted_twice_gives_one_job(make_queue):
    q = make_queue("life")
    assert q.submit_job("life.return", job_id="order-7", params={"value": 1}) == "order-7"
    assert q.submit_job("life.return", job_id="order-7", params={"value": 2}) == "order-7"
    assert q.stats()["pending"] == 1 and q.get_job("order-7").params == {"value": 1}
    q.start()
    wait_until(lambda: state(q, "order-7") == "succeeded")
    # kept for result_ttl: still the same job
    assert q.submit_job("life.return", job_id="order-7", params={"value": 3}) == "order-7"
    assert q.get_job("order-7").result == 1


def test_duplicate_ids_in_one_batch_give_one_job(make_queue):
    q = make_queue("life")
    ids = q.submit_jobs([{"task_id": "life.return", "job_id": "same", "params": {"value": n}}
                         for n in range(3)] + [{"task_id": "life.return"}])
    assert ids[:3] == ["same"] * 3 and ids[3] != "same"
    assert q.stats()["pending"] == 2 and q.get_job("same").params == {"value": 0}


def test_coalesce_merges_into_the_newest_not_started_job_of_the_resource(make_queue):
    q = make_queue("life", worker_count=1)
    running = q.submit_job("life.block", resource_id="r", params={"seconds": 0.5})
    q.start()
    wait_until(lambda: running in life().started)
    first = q.submit_job("life.return", resource_id="r", params={"value": 1}, coalesce=True)
    assert first != running                           # a running job is never merged into
    again = [q.submit_job("life.return", resource_id="r", params={"value": n}, retries=n,
                          coalesce=True) for n in (2, 3, 4)]
    assert again == [first] * 3
    job = q.get_job(first)
    assert job.params == {"value": 4} and job.retries == 4 and q.stats()["waiting"] == 1
    other_task = q.submit_job("life.block", resource_id="r", params={"seconds": 0}, coalesce=True)
    assert other_task not in (first, running)         # another task: queued behind
    wait_until(lambda: state(q, other_task) == "succeeded", timeout=10)
    assert q.get_job(first).result == 4               # latest wins, one run


def test_coalesce_into_a_pending_holder_and_not_into_a_cancelled_job(make_queue):
    q = make_queue("life")
    holder = q.submit_job("life.return", resource_id="r", params={"value": 1})
    assert q.submit_job("life.return", resource_id="r", params={"value": 2},
                        coalesce=True) == holder
    assert q.cancel(holder)
    fresh = q.submit_job("life.return", resource_id="r", params={"value": 3}, coalesce=True)
    assert fresh != holder and state(q, fresh) == "pending"


def test_bad_job_ids_and_coalesce_without_a_resource_write_nothing(make_queue, r):
    q = make_queue("life")
    cases = [({"job_id": ""}, greenq.ParamsError), ({"job_id": 5}, TypeError),
             ({"job_id": "x" * 513}, greenq.ParamsError), ({"coalesce": True}, greenq.ParamsError),
             ({"coalesce": "yes", "resource_id": "r"}, TypeError)]
    for kwargs, error in cases:
        with pytest.raises(error):
            q.submit_job("life.return", **kwargs)
        with pytest.raises(error):
            q.submit_jobs([{"task_id": "life.return"}, {"task_id": "life.return", **kwargs}])
    assert r.keys(q.keys.prefix + "*") == []


# -- fencing tokens ----------------------------------------------------------------


def test_current_job_gives_each_run_a_larger_fencing_token(make_queue):
    q = make_queue("life", worker_count=1)
    assert greenq.current_job() is None
    ids = [q.submit_job("life.fence", resource_id="r", params={"n": n}) for n in range(5)]
    q.start()
    wait_until(lambda: all(state(q, job_id) == "succeeded" for job_id in ids))
    seen = [entry for entry in life().seen if entry[0] in ids]
    assert [entry[0] for entry in seen] == ids and all(entry[2] for entry in seen)
    tokens = [entry[1] for entry in seen]
    assert tokens == sorted(tokens) and len(set(tokens)) == 5
    assert [q.get_job(job_id).result for job_id in ids] == tokens
    assert greenq.current_job() is None


def test_a_waiter_gets_a_result_too_big_to_ride_in_the_message_and_one_that_rides(make_queue):
    """Records up to 8 KB come with the published id (no read); a bigger
    one is read by the listener (include/ended.lua)."""
    q = make_queue("life")
    big = q.submit_job("life.return", params={"big": 20_000})
    small = q.submit_job("life.return", params={"value": "s"})
    waiters = [gevent.spawn(q.wait, job_id, 30) for job_id in (big, small)]
    wait_until(lambda: all(q.broker.shared.hget(q.keys.job(j), "watch") for j in (big, small)))
    q.start()
    gevent.joinall(waiters, timeout=30, raise_error=True)
    assert waiters[0].value.result == "x" * 20_000 and waiters[1].value.result == "s"


def test_generated_job_ids_never_start_with_a_dash_so_the_cli_takes_them():
    from greenq.queue import new_job_id

    ids = [new_job_id() for _ in range(20_000)]   # a leading "-" came once in 64
    assert len(set(ids)) == len(ids) and not any(job_id.startswith("-") for job_id in ids)
    assert all(len(job_id) == 16 for job_id in ids)
