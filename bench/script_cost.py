"""Redis time of the two scripts every job passes through, per job: queue N
no-op jobs, lease them all with fetch.lua (100 per call), then finish them
all with complete.lua (100 per call), reading EVALSHA's time from INFO
commandstats around each phase. No worker, no gevent scheduling: only what
the scripts cost Redis.

    python -m bench.script_cost [--jobs 20000] [--rounds 3]

Starts a throwaway redis-server. Prints one line per round.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

import redis  # noqa: E402

import greenq  # noqa: E402
from greenq.job import FETCH_ROW  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402

BATCH = 100
PROCESS = "script-cost"
TIMEOUT_MS = 30000


def evalsha_usec(admin: redis.Redis) -> int:
    return admin.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)


def one_round(url: str, jobs: int, namespace: str) -> tuple[float, float]:
    """(fetch, complete): microseconds of Redis per job."""
    admin = redis.Redis.from_url(url)
    queue = greenq.GreenQueue(redis_url=url, namespace=namespace)
    for start in range(0, jobs, 1000):
        queue.submit_jobs([{"task_id": "bench.noop"}] * min(1000, jobs - start))
    broker = queue.brokers[0]
    channel = broker.script_channel()
    broker.heartbeat(PROCESS, channel)
    leased = []
    began = evalsha_usec(admin)
    while True:
        rows, _problems = broker.fetch(channel, PROCESS, BATCH, TIMEOUT_MS, ["bench.noop", TIMEOUT_MS])
        if not rows:
            break
        leased.append(rows)
    fetched = evalsha_usec(admin)
    for rows in leased:
        groups = []
        for i in range(0, len(rows), FETCH_ROW):
            groups += [rows[i].decode(), rows[i + 1], "", "", 5]  # id, lease, no result, 5 us
        broker.run_batch(channel, [broker.complete_call(PROCESS, groups)])
    completed = evalsha_usec(admin)
    if sum(len(rows) for rows in leased) != jobs * FETCH_ROW:
        raise RuntimeError("not every job was leased")
    channel.disconnect()
    admin.close()
    return (fetched - began) / jobs, (completed - fetched) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.script_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with ThrowawayRedis() as server:
        for round_ in range(args.rounds):
            fetch, complete = one_round(server.url, args.jobs, f"script-cost-{round_}")
            print(f"round {round_ + 1}: fetch.lua {fetch:.2f} us/job, complete.lua {complete:.2f} us/job, "
                  f"together {fetch + complete:.2f}")


if __name__ == "__main__":
    main()
