"""One log line per job outcome on the `greenq.jobs` logger, as an operator
sees it in the stderr of a real `greenq run` (in-process and with a child),
and silenced on its own by an embedding program."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import TASKS, wait_until

OUTCOME_TASK = os.path.join(TASKS, "proc_outcome.py")
SECONDS = r"\d+\.\d{3} s"


class Run:
    """`greenq run OUTCOME_TASK ...` with its stderr in a file."""

    def __init__(self, tmp_path, redis_url: str, namespace: str, *options: str) -> None:
        self.path = tmp_path / f"greenq-run-{time.monotonic_ns()}.log"
        with open(self.path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "greenq", "run", OUTCOME_TASK, "-w", "4",
                 "--redis-url", redis_url, "--namespace", namespace, *options],
                stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.path.read_text(errors="replace")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(30) == 0, self.log()
        except subprocess.TimeoutExpired:
            pytest.fail(f"greenq run did not exit within 30 s:\n{self.log()}")
        return self.log()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def runs(tmp_path, redis_url, namespace):
    started: list[Run] = []

    def start(*options: str) -> Run:
        run = Run(tmp_path, redis_url, namespace, *options)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def job_lines(log: str) -> list[str]:
    """The greenq.jobs records, each from its level on, continuation lines
    (a traceback) joined to it."""
    records: list[str] = []
    for line in log.splitlines():
        match = re.match(r"\S+ \S+ greenq\[\d+\] (\w+ \S+: .*)", line)
        if match:
            records.append(match.group(1))
        elif records:
            records[-1] += "\n" + line
    return [record for record in records if record.split()[1] == "greenq.jobs:"]


@pytest.mark.parametrize("children", ["0", "1"])
def test_greenq_run_at_info_logs_a_line_per_success_retry_and_failure_with_its_traceback(
        runs, make_queue, children):
    run = runs("-c", children)  # --log-level INFO is the default
    queue = make_queue()
    ok = queue.submit_job("proc.outcome", resource_id="res-A", params={})
    bad = queue.submit_job("proc.outcome", params={"fail": "boom"}, retries=1)
    wait_until(lambda: queue.stats()["failed"] == 1 and len(job_lines(run.log())) == 3, timeout=30)

    lines = job_lines(run.stop())

    assert len(lines) == 3, lines
    success, retry, failure = (next(line for line in lines if pattern in line) for pattern in
                               (f"job {ok} ", f"job {bad} proc.outcome resource=None attempt 1 ",
                                f"job {bad} proc.outcome resource=None attempt 2 "))
    assert re.fullmatch(rf"INFO greenq.jobs: job {ok} proc.outcome resource=res-A attempt 1 "
                        rf"succeeded in {SECONDS}", success), success
    assert re.fullmatch(rf"INFO greenq.jobs: job {bad} proc.outcome resource=None attempt 1 "
                        rf"failed in {SECONDS}; retrying, 0 retries left: "
                        rf"ValueError: asked to fail: boom", retry), retry
    head, *traceback = failure.splitlines()
    assert re.fullmatch(rf"WARNING greenq.jobs: job {bad} proc.outcome resource=None attempt 2 "
                        rf"failed in {SECONDS}; no retries left, moved to the failed queue:",
                        head), failure
    assert traceback[0] == "Traceback (most recent call last):"
    assert 'raise ValueError(f"asked to fail: {params[\'fail\']}")' in failure
    assert traceback[-1] == "ValueError: asked to fail: boom"


def test_greenq_run_at_debug_also_logs_each_job_as_it_starts(runs, make_queue):
    run = runs("--log-level", "debug")
    queue = make_queue()
    job = queue.submit_job("proc.outcome", resource_id="res-A", params={})
    wait_until(lambda: len(job_lines(run.log())) == 2, timeout=30)

    lines = job_lines(run.stop())

    assert lines[0] == f"DEBUG greenq.jobs: job {job} proc.outcome resource=res-A attempt 1 started"
    assert lines[1].startswith(f"INFO greenq.jobs: job {job} proc.outcome resource=res-A "
                               f"attempt 1 succeeded in ")


def test_a_master_whose_job_logger_is_silenced_has_children_that_log_no_job_lines(
        make_queue, capfd):
    # The children's stderr is this process' fd 2, which capfd captures.
    logging.getLogger("greenq").setLevel(logging.INFO)
    logging.getLogger("greenq.jobs").setLevel(logging.WARNING)
    try:
        queue = make_queue("proc_outcome", child_process_count=1, worker_count=2)
        succeeded, failed = [], []
        queue.on("job_success", succeeded.append)
        queue.on("job_fail", failed.append)
        queue.start()
        queue.submit_job("proc.outcome", params={})
        queue.submit_job("proc.outcome", params={"fail": "boom"})
        wait_until(lambda: succeeded and failed, timeout=30)
        queue.shutdown(timeout=10)
    finally:
        logging.getLogger("greenq").setLevel(logging.NOTSET)
        logging.getLogger("greenq.jobs").setLevel(logging.NOTSET)

    err = capfd.readouterr().err
    assert " succeeded in " not in err
    assert "WARNING greenq.jobs: job " in err and "moved to the failed queue" in err


def test_a_job_found_dead_by_a_workers_stale_flush_is_logged_at_warning(make_queue, caplog):
    queue = make_queue("proc_outcome", worker_count=2)
    job = queue.submit_job("proc.outcome", params={}, retries=1)
    # Leased by a process that then died: it never sends a heartbeat.
    rows, _problems = queue.broker.fetch(None, "gone:1:x", 1, 1000, ["proc.outcome", 1000])
    assert rows[0].decode() == job

    with caplog.at_level(logging.INFO, logger="greenq.jobs"):
        queue.start()
        wait_until(lambda: len([r for r in caplog.records if r.name == "greenq.jobs"]) == 2,
                   timeout=30)

    dead, success = [r for r in caplog.records if r.name == "greenq.jobs"]
    assert dead.levelname == "WARNING"
    assert re.fullmatch(rf"job {job} proc.outcome resource=None attempt 1 found dead; retrying, "
                        rf"0 retries left: stale: process gone:1:x sent no heartbeat for .*",
                        dead.getMessage()), dead.getMessage()
    assert success.getMessage().startswith(f"job {job} proc.outcome resource=None attempt 2 "
                                           f"succeeded in ")
