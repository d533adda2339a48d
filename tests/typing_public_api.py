"""Not a test module: mypy checks this file (setup.cfg [mypy], run by
tools/test) to keep greenq's public API typed the way callers use it."""

from __future__ import annotations

from datetime import datetime, timezone

import greenq
from greenq import GreenQueue, Job


@greenq.task("typed.add", timeout=5.0, time_limit=60.0)
def add(params: dict) -> int:
    return int(params["a"]) + int(params["b"])


@greenq.task("typed.limited", retry_delay=1.0, retry_backoff=2.0, retry_delay_max=60.0,
             rate_limit="10/s")
def limited(params: dict) -> None:
    return None


def use_the_api(queue: GreenQueue) -> None:
    queue.register_task("tasks/typed.py")
    queue.on("job_success", lambda job: None)
    job_id: str = queue.submit_job("typed.add", resource_id="r-1", params={"a": 1, "b": 2},
                                   retries=1)
    ids: list[str] = queue.submit_jobs([{"task_id": "typed.add", "params": {"a": 1, "b": 2}}])
    counts: dict[str, int] = queue.stats()
    failed: list[Job] = queue.failed_jobs(limit=10)
    moved: int = queue.retry_failed_jobs() + queue.delete_failed_jobs()
    moved += queue.retry_failed_jobs(job_ids=["a", "b"], task_id="typed.add")
    moved += queue.delete_failed_jobs(job_ids=("a",)) + queue.delete_failed_jobs(task_id="t")
    failed += queue.failed_jobs(limit=5, task_id="typed.add")
    flushed: int = queue.force_flush_stale_jobs()
    first: Job = failed[0]
    text: str | None = first.error
    _ = (job_id, ids, counts, moved, flushed, first.id, first.task_id, first.retries,
         first.attempts, text)
    same: str = queue.submit_job("typed.add", resource_id="r-1", job_id="order-7",
                                 coalesce=True)
    found: Job | None = queue.get_job(same)
    if found is not None:
        state: str | None = found.state
        token: int = found.fencing_token
        _ = (state, token, found.result)
    later: str = queue.submit_job("typed.add", delay=2.5)
    later = queue.submit_job("typed.add", run_at=datetime.now(timezone.utc))
    later = queue.submit_job("typed.add", run_at=1_900_000_000.0)
    queue.add_schedule("nightly", "typed.add", cron="0 3 * * *", tz="Europe/Berlin",
                       resource_id="r-1", params={"a": 1, "b": 2}, retries=1)
    queue.add_schedule("often", "typed.add", every=30)
    schedules: list[dict] = queue.schedules()
    removed: bool = queue.remove_schedule("often")
    _ = (later, schedules, removed)
    cancelled: bool = queue.cancel(same)
    running: Job | None = greenq.current_job()
    _ = (cancelled, running)
    queue.shutdown(timeout=1.0)


def build() -> GreenQueue:
    try:
        return GreenQueue(redis_url="redis://127.0.0.1:6379/0", namespace="n", queue_id="q",
                          child_process_count=0, worker_count=10, flush_stale_timeout=5.0,
                          serializer="json", result_ttl=60.0)
    except greenq.GreenQError:
        raise
