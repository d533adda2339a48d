"""How long greenq's workers take to run jobs again on a Redis Cluster
partition whose master changed.

    python -m bench.cluster_recovery [--runs 3] [--replicas 1]

Starts a local cluster of 3 masters and 3 replicas (the tests'
tests/redis_cluster.py, cluster-node-timeout 1000 ms) and one in-process
queue with partitions=3 (8 workers) fed a steady stream of no-op jobs (one
submit every 10 ms, each retried until Redis takes it). Per run, two events
on the master of partition 0:

  failover   CLUSTER FAILOVER on its replica
  kill       SIGKILL of the master (its replica is promoted)

Recovery = from the event until the first success of a job of a partition
that master served, submitted once the cluster settled (every node agrees
on the new master); also given from that moment, which is greenq's part. Also counted: `error`
events, and jobs acknowledged by a submit but never run (with --replicas 1
a submit returns only once the replica has it).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from greenq import GreenQueue  # noqa: E402
from greenq.nodes import slot_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the cluster fixture

from redis_cluster import LocalCluster  # noqa: E402

TASKS = os.path.join(ROOT, "bench", "tasks.py")
SUBMIT_EVERY = 0.01
PARTITIONS = 3


def run_once(cluster: LocalCluster, event: str, tag: str, replicas: int) -> dict:
    queue = GreenQueue(redis_url=cluster.url, namespace=f"cluster-bench-{tag}", worker_count=8,
                       partitions=PARTITIONS, replicas=replicas)
    queue.register_task(TASKS)
    partitions = queue._partition_set()
    successes: list[tuple[float, str]] = []
    errors: list[float] = []
    submitted: dict[str, float] = {}
    queue.on("job_success", lambda job: successes.append((time.monotonic(), job.id)))
    queue.on("error", lambda exc: errors.append(time.monotonic()))
    queue.start()

    def submit_forever() -> None:
        n = 0
        while True:
            job_id = f"{tag}-{n}"
            try:
                queue.submit_job("bench.noop", job_id=job_id)
                submitted[job_id] = time.monotonic()
                n += 1
            except Exception:  # noqa: BLE001 - an outage: ask again
                pass
            gevent.sleep(SUBMIT_EVERY)

    submitter = gevent.spawn(submit_forever)
    try:
        while len(successes) < 100:
            gevent.sleep(0.05)
        port = cluster.node_for_slot(slot_of(partitions.brokers[0].keys.prefix))[1]
        affected = {k for k, broker in enumerate(partitions.brokers)
                    if cluster.node_for_slot(slot_of(broker.keys.prefix))[1] == port}
        errors_before = len(errors)
        at = time.monotonic()
        if event == "kill":
            cluster.kill_master(port)
        else:
            cluster.failover(port)
        settled = time.monotonic()  # every node agrees on the new master
        deadline = at + 60
        while True:
            after = [t for t, job_id in successes if submitted.get(job_id, 0) > settled
                     and partitions.of(None, job_id) in affected]
            if after:
                recovery, behind = after[0] - at, after[0] - settled
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{event}: no job of the affected partitions ran within 60 s")
            gevent.sleep(0.01)
        gevent.sleep(5)
        submitter.kill()
        gevent.sleep(3)
        ran = {job_id for _, job_id in successes}
        return {"event": event, "recovery_s": round(recovery, 3),
                "after_settled_s": round(behind, 3),
                "error_events": len(errors) - errors_before,
                "acknowledged": len(submitted), "lost": len(set(submitted) - ran)}
    finally:
        submitter.kill()
        queue.shutdown(timeout=5)
        cluster.heal()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_recovery",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    results = []
    with LocalCluster(masters=3, replicas_per_master=1) as cluster:
        for run in range(args.runs):
            for event in ("failover", "kill"):
                result = run_once(cluster, event, f"{event}{run}", args.replicas)
                results.append(result)
                print(f"run {run + 1} {event:9} recovery {result['recovery_s']:6.2f} s "
                      f"({result['after_settled_s']:.2f} s after the cluster settled)  "
                      f"error events {result['error_events']}  "
                      f"lost {result['lost']}/{result['acknowledged']}", flush=True)
    print("\nevent      recovery s: median (min-max)   after settled   error events   lost")
    for event in ("failover", "kill"):
        rows = [r for r in results if r["event"] == event]
        times = [r["recovery_s"] for r in rows]
        behind = [r["after_settled_s"] for r in rows]
        print(f"{event:10} {statistics.median(times):6.2f} ({min(times):.2f}-{max(times):.2f})"
              f"         {statistics.median(behind):.2f} ({min(behind):.2f}-{max(behind):.2f})"
              f"   {sorted({r['error_events'] for r in rows})}"
              f"            {sum(r['lost'] for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
