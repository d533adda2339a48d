"""A worker child process: `python -m greenq.child`, started by the master.

A fresh interpreter rather than a fork: an embedding master (a web server)
has greenlets, listening sockets and Redis connections a fork would copy;
a new interpreter patches gevent first thing and loads the tasks by module
name or absolute path, which SIGHUP also uses to pick up new task code.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from .errors import TaskDefinitionError  # noqa: E402
from .link import Link, encode_payload  # noqa: E402

log = logging.getLogger("greenq.child")

CONFIG_ENV = "GREENQ_CHILD"
BOOT_FAILURE = 3  # exit status of a child that could not load its tasks or reach Redis


def set_title(text: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(text)


def main() -> None:
    config = json.loads(os.environ.pop(CONFIG_ENV))
    sys.path[:0] = [p for p in config.get("sys_path", []) if p not in sys.path]
    from . import logs

    logs.setup(config["log_level"], config.get("log_format", "text"))
    logging.getLogger("greenq.jobs").setLevel(config.get("job_log_level", config["log_level"]))
    link = Link(socket.socket(fileno=config["fd"]))
    children = config["children"]  # SIGTTIN/SIGTTOU change it; the master tells us

    def title(state: str) -> None:
        set_title(f"greenq: worker {config['index']}/{children} "
                  f"[{config['namespace']}:{config['queue_id']}] {state}")

    title("booting")
    from .queue import GreenQueue

    try:
        queue = GreenQueue(redis_url=config["redis_url"], redis_config=config["redis_config"],
                           namespace=config["namespace"], queue_id=config["queue_id"],
                           worker_count=config["worker_count"], serializer=config["serializer"],
                           flush_stale_timeout=config["flush_stale_timeout"],
                           max_params_bytes=config["max_params_bytes"],
                           unknown_task_grace=config["unknown_task_grace"],
                           result_ttl=config["result_ttl"], replicas=config["replicas"],
                           partitions=config.get("partitions"))
        queue._exit_when_stuck = True
        queue._about = {"role": "child", "index": config["index"], "master": os.getppid()}
        # Before it can fetch: the master reclaims this process' jobs under
        # that id the moment it dies.
        link.send("process", queue.process_id)
        for spec in config["tasks"]:
            queue.register_task(spec)
        from .tracing import setup_worker

        setup_worker()  # $GREENQ_OTEL: here, after the tasks (a hook may live there) and before jobs
        subscribed = set(config["events"])
        for event in ("job_success", "job_fail", "job_retry", "job_cancel", "error"):
            queue.on(event, lambda payload, event=event: event in subscribed and link.send(
                "event", event, encode_payload(event, payload)))
        queue.start()
    except TaskDefinitionError as exc:  # already one line naming the file and line
        log.error("worker child could not start: %s", exc)
        link.send("failed", f"{type(exc).__name__}: {exc}")
        sys.exit(BOOT_FAILURE)
    except Exception as exc:
        log.exception("worker child could not start")
        link.send("failed", f"{type(exc).__name__}: {exc}")  # the master's one line on why
        sys.exit(BOOT_FAILURE)

    from .runner import keep_running_through_stray_exits

    keep_running_through_stray_exits()
    link.send("ready", os.getpid())
    stop = gevent.event.Event()
    signals = []

    def on_signal(signum: int) -> None:
        signals.append(signum)  # only note it; the loop below acts
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_signal, signum)

    def show_load() -> None:
        worker = queue._runner
        title(f"{len(worker.running)}/{worker.worker_count} busy")

    def listen() -> None:
        nonlocal children
        for message in link.receive():
            if message[0] == "subscribe":
                subscribed.clear()
                subscribed.update(message[1])
            elif message[0] == "children":
                children = message[1]
                if not stop.is_set():
                    show_load()
        signals.append("master gone")  # channel closed: the master died
        stop.set()

    gevent.spawn(listen)
    master = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != master:
            signals.append("master gone")
            stop.set()
        show_load()

    title("stopping")
    hurry = signals[0] == "master gone"
    shutting = gevent.spawn(queue.shutdown, 0 if hurry else None)
    while not shutting.ready():
        stop.clear()
        if len(signals) > 1 or hurry:
            queue.hurry_shutdown()
        stop.wait(0.5)
    shutting.get()
    link.close()


if __name__ == "__main__":
    main()
