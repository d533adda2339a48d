"""How long greenq's workers take to run jobs again after the Sentinel
master changes.

    python -m bench.sentinel_recovery [--runs 3] [--json FILE]

Starts a throwaway Sentinel set (1 master, 1 replica, 3 sentinels; the
tests' tests/sentinel_set.py) and one in-process queue (8 workers) fed a
steady stream of no-op jobs (one submit every 10 ms, each retried until
Redis takes it). Per run, three events:

  failover       SENTINEL FAILOVER, Redis' defaults (min-replicas-to-write 0)
  failover-mr1   SENTINEL FAILOVER, min-replicas-to-write 1 on the master
  kill           SIGKILL of the master (Sentinel: down-after-milliseconds 1000)

Recovery = from the event (the command sent, the kill) until the first job
success confirmed after the queue's connections moved to the new master
(greenq/sentinel.py logs the move). Also counted: `error` events (one per
outage expected) and jobs acknowledged by a submit but never run (writes
a failover dropped; a kill may drop what the replica had not received).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from greenq import GreenQueue  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the Sentinel set fixture

from sentinel_set import SentinelSet  # noqa: E402

TASKS = os.path.join(ROOT, "bench", "tasks.py")
EVENTS = ("failover", "failover-mr1", "kill")
SUBMIT_EVERY = 0.01
DRAIN_WAIT = 10.0  # after recovery, how long acknowledged jobs get to run


class MoveWatch(logging.Handler):
    """The time.monotonic() of each 'master moved' line of greenq.sentinel."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.moves: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "master moved" in record.getMessage():
            self.moves.append(time.monotonic())


class Stream:
    """A queue with workers and a submitter that never stops asking."""

    def __init__(self, url: str, tag: str) -> None:
        self.queue = GreenQueue(redis_url=url, namespace=f"sentinel-bench-{tag}", worker_count=8)
        self.queue.register_task(TASKS)
        self.successes: list[tuple[float, str]] = []
        self.errors: list[float] = []
        self.queue.on("job_success", lambda job: self.successes.append((time.monotonic(), job.id)))
        self.queue.on("error", lambda exc: self.errors.append(time.monotonic()))
        self.acknowledged: set[str] = set()
        self.queue.start()
        self._submitter = gevent.spawn(self._submit_forever)

    def _submit_forever(self) -> None:
        n = 0
        while True:
            job_id = f"b{n}"
            try:
                self.queue.submit_job("bench.noop", job_id=job_id)
                self.acknowledged.add(job_id)
                n += 1
            except Exception:  # noqa: BLE001 - an outage: ask again
                pass
            gevent.sleep(SUBMIT_EVERY)

    def stop(self) -> None:
        self._submitter.kill()
        self.queue.shutdown(timeout=5)


def run_once(sentinels: SentinelSet, event: str, watch: MoveWatch, tag: str) -> dict:
    sentinels.set_min_replicas(1 if event == "failover-mr1" else 0)
    stream = Stream(sentinels.url, tag)
    try:
        while len(stream.successes) < 100:
            gevent.sleep(0.05)
        errors_before = len(stream.errors)
        if event == "kill":
            at = sentinels.kill_master()
        else:
            at = sentinels.start_failover()
        deadline = time.monotonic() + 60
        while True:
            moved = [t for t in watch.moves if t >= at]
            after = [t for t, _ in stream.successes if moved and t > moved[0]]
            if after:
                recovery = after[0] - at
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{event}: no job ran on the new master within 60 s")
            gevent.sleep(0.01)
        gevent.sleep(DRAIN_WAIT)
        stream._submitter.kill()
        gevent.sleep(2.0)
        ran = {job_id for _, job_id in stream.successes}
        result = {"event": event, "recovery_s": round(recovery, 3),
                  "error_events": len(stream.errors) - errors_before,
                  "acknowledged": len(stream.acknowledged),
                  "lost": len(stream.acknowledged - ran)}
    finally:
        stream.stop()
    if event == "kill":
        sentinels.revive()
    else:
        sentinels.settle(hasten=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sentinel_recovery",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    watch = MoveWatch()
    logging.getLogger("greenq.sentinel").addHandler(watch)
    logging.getLogger("greenq.sentinel").setLevel(logging.WARNING)
    logging.getLogger("greenq.sentinel").propagate = False  # counted, not printed

    sentinels = SentinelSet()
    results = []
    try:
        for run in range(args.runs):
            for event in EVENTS:
                result = run_once(sentinels, event, watch, f"{event}-{run}")
                results.append(result)
                print(f"run {run + 1} {event:13} recovery {result['recovery_s']:6.2f} s  "
                      f"error events {result['error_events']}  "
                      f"lost {result['lost']}/{result['acknowledged']}", flush=True)
    finally:
        sentinels.close()
    print("\nevent          recovery s: median (min-max)   error events   lost")
    for event in EVENTS:
        rows = [r for r in results if r["event"] == event]
        times = [r["recovery_s"] for r in rows]
        print(f"{event:14} {statistics.median(times):6.2f} ({min(times):.2f}-{max(times):.2f})"
              f"            {sorted({r['error_events'] for r in rows})}"
              f"            {sum(r['lost'] for r in rows)}")
    if args.json_path:
        with open(args.json_path, "w") as file:
            json.dump(results, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
