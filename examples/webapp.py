"""A gevent.pywsgi web app (no framework) with a GreenQueue in the same
process: the request greenlets submit, the queue's greenlets run the jobs.

    python examples/webapp.py [--port 8000] [--redis-url URL] [--namespace NS]

    POST /jobs   {"task": ..., "resource": ..., "params": ..., "retries": 0} -> 201 {"id": ...}
    GET  /stats  the queue's stats, plus "succeeded" (job_success events seen here)
    GET  /done   {"ids": [...]}: jobs that succeeded in this process, oldest first

Options also come from $PORT, $GREENQ_REDIS_URL (or $REDIS_URL) and
$GREENQ_NAMESPACE. SIGTERM or SIGINT: stop accepting requests, let running
jobs finish (q.shutdown()), exit 0.
"""

from gevent import monkey

monkey.patch_all()  # first, before anything imports socket, ssl or redis

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from greenq import GreenQError, GreenQueue  # noqa: E402

log = logging.getLogger("webapp")

HERE = os.path.dirname(os.path.abspath(__file__))
DONE_KEPT = 100_000   # ids of succeeded jobs kept for GET /done (oldest dropped)
MAX_BODY = 1 << 20


class App:
    """The WSGI application: three routes over one GreenQueue."""

    def __init__(self, queue: GreenQueue) -> None:
        self.queue = queue
        self.done: collections.deque[str] = collections.deque(maxlen=DONE_KEPT)
        self.succeeded = 0
        queue.on("job_success", self._on_success)

    def _on_success(self, job) -> None:
        self.succeeded += 1
        self.done.append(job.id)

    def __call__(self, environ, start_response):
        route = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        try:
            if route == ("POST", "/jobs"):
                status, body = self.submit(environ)
            elif route == ("GET", "/stats"):
                status, body = "200 OK", {**self.queue.stats(), "succeeded": self.succeeded}
            elif route == ("GET", "/done"):
                status, body = "200 OK", {"ids": list(self.done)}
            elif route[1] in ("/jobs", "/stats", "/done"):
                status, body = "405 Method Not Allowed", {"error": "method not allowed"}
            else:
                status, body = "404 Not Found", {"error": "not found"}
        except Exception:
            log.exception("%s %s failed", *route)
            status, body = "500 Internal Server Error", {"error": "internal error"}
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]

    def submit(self, environ):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return "400 Bad Request", {"error": f"send a JSON body of 1..{MAX_BODY} bytes"}
        try:
            spec = json.loads(environ["wsgi.input"].read(length))
        except ValueError as exc:
            return "400 Bad Request", {"error": f"body is not JSON: {exc}"}
        if not isinstance(spec, dict) or "task" not in spec:
            return "400 Bad Request", {"error": 'body must be an object with "task"'}
        try:
            job_id = self.queue.submit_job(spec["task"], resource_id=spec.get("resource"),
                                           params=spec.get("params"),
                                           retries=spec.get("retries", 0))
        except (TypeError, ValueError, GreenQError) as exc:  # bad arguments, nothing written
            return "400 Bad Request", {"error": str(exc)}
        return "201 Created", {"id": job_id}


def parse_args(argv):
    parser = argparse.ArgumentParser(description="greenq example web app")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--redis-url", default=None,
                        help="default: $GREENQ_REDIS_URL, else $REDIS_URL, else local Redis")
    parser.add_argument("--namespace", default=os.environ.get("GREENQ_NAMESPACE", "greenq-webapp"))
    parser.add_argument("--workers", type=int, default=100, help="concurrent jobs in this process")
    parser.add_argument("--shutdown-timeout", type=float, default=None,
                        help="on SIGTERM, give jobs still running after this long back to the queue")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    queue = GreenQueue(redis_url=args.redis_url, namespace=args.namespace,
                       child_process_count=0, worker_count=args.workers)
    queue.register_task(os.path.join(HERE, "tasks.py"))
    app = App(queue)
    server = WSGIServer((args.host, args.port), app, log=None,
                        error_log=logging.getLogger("webapp.http"))

    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)  # the handler only flags; main does the work

    queue.start()
    server.start()
    log.info("listening on http://%s:%d/ (namespace %s)", args.host, server.server_port,
             args.namespace)
    stop.wait()
    log.info("stopping: no new requests, letting running jobs finish")
    server.stop(timeout=5)
    queue.shutdown(timeout=args.shutdown_timeout)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
