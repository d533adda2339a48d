"""Submit speed alone, for A/B runs of two trees: 50 x submit_jobs(1000)
(best of three rounds) and 3,000 submit_job, on a throwaway redis-server.

    PYTHONPATH=<tree> python -m bench.submits

Prints one JSON object: {"bulk": jobs/s, "single": jobs/s}. Alternate the
trees run by run; the machine drifts.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import time  # noqa: E402

import greenq  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402


def main() -> None:
    with ThrowawayRedis() as server:
        q = greenq.GreenQueue(redis_url=server.url, namespace="bench-submits")
        jobs = [{"task_id": "bench.job", "params": {"k": "x"}}] * 1000
        q.submit_jobs(jobs)  # warm: scripts loaded, connections open
        bulk = []
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(50):
                q.submit_jobs(jobs)
            bulk.append(50_000 / (time.perf_counter() - began))
        began = time.perf_counter()
        for _ in range(3000):
            q.submit_job("bench.job", params={"k": "x"})
        single = 3000 / (time.perf_counter() - began)
        print(json.dumps({"bulk": round(max(bulk)), "single": round(single)}))


if __name__ == "__main__":
    main()
