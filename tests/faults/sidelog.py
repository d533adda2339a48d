"""Helpers for the fault suite: the side-effect log written by
tests/tasks/fault_log_sleep.py, and the processes the faults are injected
into (`greenq run`, a worker program that records its events), seen from
outside through /proc.

The log is the witness Redis cannot overwrite: a job lost, run twice, or
run while another job of its resource runs shows there whatever Redis
says afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, namedtuple

import pytest

from processes import alive, worker_children

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
TASK_FILE = os.path.join(TESTS, "tasks", "fault_log_sleep.py")
TASK_ID = "fault.log"

Entry = namedtuple("Entry", "n pid what run")


# -- the side-effect log -------------------------------------------------------


class SideLog:
    """The file the task appends "<n> <pid> start|end|fail <run>" lines to."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def params(self, n: int, **extra) -> dict:
        return {"log": self.path, "n": n, **extra}

    def entries(self) -> list[Entry]:
        try:
            with open(self.path) as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            n, pid, what, run = line.split()
            out.append(Entry(int(n), int(pid), what, int(run)))
        return out

    def lines_of(self, n: int, what: str) -> list[Entry]:
        return [e for e in self.entries() if e.n == n and e.what == what]

    def count(self, what: str) -> Counter:
        """job number -> how many lines of kind `what` it has."""
        return Counter(e.n for e in self.entries() if e.what == what)

    def interrupted(self) -> list[Entry]:
        """Runs that started and neither ended nor failed (killed or given back)."""
        entries = self.entries()
        finished = {(e.n, e.pid, e.run) for e in entries if e.what in ("end", "fail")}
        return [e for e in entries if e.what == "start" and (e.n, e.pid, e.run) not in finished]

    def assert_each_ended_once(self, numbers) -> None:
        ends = self.count("end")
        assert {n: ends[n] for n in numbers} == {n: 1 for n in numbers}, \
            f"each job should end exactly once; log:\n{self.dump()}"
        assert set(ends) <= set(numbers), f"unexpected jobs ran; log:\n{self.dump()}"

    def assert_one_at_a_time(self, resource_of: dict[int, str]) -> None:
        """No two finished runs of one resource overlap, and per resource the
        jobs finish in the order of their numbers (their submission order).
        Interrupted runs (no end line) are left to the caller."""
        entries = self.entries()
        finished = {(e.n, e.pid, e.run) for e in entries if e.what in ("end", "fail")}
        holder: dict[str, tuple] = {}
        order: dict[str, list[int]] = {}
        for e in entries:
            res = resource_of.get(e.n)
            if res is None or (e.n, e.pid, e.run) not in finished:
                continue
            if e.what == "start":
                assert res not in holder, (
                    f"job {e.n} started on {res} while {holder.get(res)} ran; log:\n{self.dump()}")
                holder[res] = (e.n, e.pid, e.run)
            else:
                assert holder.pop(res, None) == (e.n, e.pid, e.run)
                if e.what == "end":
                    order.setdefault(res, []).append(e.n)
        for res, ns in order.items():
            assert ns == sorted(ns), f"{res}: jobs finished out of order {ns}"

    def max_concurrency(self) -> int:
        running = peak = 0
        for e in self.entries():
            running += 1 if e.what == "start" else -1
            peak = max(peak, running)
        return peak

    def dump(self) -> str:
        try:
            with open(self.path) as file:
                return file.read()
        except FileNotFoundError:
            return "<no log>"


# -- processes, seen from outside ------------------------------------------------


def redis_connections_by_pid(client, pids) -> dict[int, int]:
    """How many of the Redis server's client connections each pid holds,
    matched through the sockets' inodes (/proc/<pid>/fd, /proc/net/tcp*).
    Only sockets connected to this server's port count: another test's
    redis-server may listen on a port that is one of these clients'
    ephemeral ports, and its accepted sockets share that local port."""
    server_port = client.connection_pool.connection_kwargs["port"]
    inode_of_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                rows = file.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == server_port:
                inode_of_port[int(fields[1].rsplit(":", 1)[1], 16)] = fields[9]
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    counts = Counter()
    for info in client.client_list():
        port = int(info["addr"].rsplit(":", 1)[1])
        pid = owner.get(inode_of_port.get(port))
        if pid is not None:
            counts[pid] += 1
    return {pid: counts[pid] for pid in pids}


def wait_gone(pids, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"processes still alive after {timeout}s: "
                        f"{[p for p in pids if alive(p)]}")
        time.sleep(0.05)


class GreenqRun:
    """One `greenq run` of the witness task (or of `task_file`), its output in a file."""

    def __init__(self, tmp_path, url: str, namespace: str, *options: str,
                 task_file: str = TASK_FILE) -> None:
        self.out_path = tmp_path / f"greenq-run-{time.monotonic_ns()}.log"
        self._out = open(self.out_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenq", "run", task_file, "--redis-url", url,
             "--namespace", namespace, *options],
            stdout=self._out, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        self.seen: set[int] = set()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def children(self, ready_only: bool = False) -> list[int]:
        pids = worker_children(self.pid, ready_only)
        self.seen.update(pids)
        return pids

    def wait_ready(self, count: int, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            ready = self.children(ready_only=True)
            if len(ready) == count and len(self.children()) == count:
                return ready
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"{count} ready children expected; output:\n{self.output()}")
            time.sleep(0.05)

    def wait_output(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} not in the output within {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"greenq run did not exit within {timeout}s; output:\n{self.output()}")

    def kill_all(self) -> None:
        if self.process.poll() is None:
            self.seen.update(worker_children(self.pid))
            self.process.kill()
            self.process.wait(10)
        for pid in self.seen:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._out.close()


# A worker program embedding a GreenQueue (monkey-patched first, as embedding
# programs are) that writes each event it sees, one JSON object a line;
# SIGTERM: shutdown(timeout=<stop timeout>).
EVENT_WORKER = r'''
import gevent.monkey
gevent.monkey.patch_all()
import json, signal, sys
import gevent, gevent.event
from greenq import GreenQueue

url, ns, task, workers, out, stop_timeout, flush_stale_timeout = sys.argv[1:8]
q = GreenQueue(redis_url=url, namespace=ns, worker_count=int(workers),
               flush_stale_timeout=float(flush_stale_timeout))
q.register_task(task)
log = open(out, "a", buffering=1)

def handler(name):
    def handle(payload):
        if name == "error":
            rec = {"event": name, "type": type(payload).__name__, "text": str(payload)}
        else:
            rec = {"event": name, "id": payload.id, "attempts": payload.attempts}
        log.write(json.dumps(rec) + "\n")
    return handle

for name in ("job_success", "job_fail", "job_retry", "job_cancel", "error"):
    q.on(name, handler(name))
q.start()
log.write(json.dumps({"event": "started", "process_id": q.process_id}) + "\n")
stop = gevent.event.Event()
gevent.signal_handler(signal.SIGTERM, stop.set)
stop.wait()
q.shutdown(timeout=float(stop_timeout))
log.write(json.dumps({"event": "stopped"}) + "\n")
'''


class EventWorker:
    """A worker process (EVENT_WORKER) whose events land in a JSONL file."""

    def __init__(self, tmp_path, url: str, namespace: str, workers: int = 4,
                 task_file: str = TASK_FILE, stop_timeout: float = 5.0,
                 flush_stale_timeout: float = 0.2) -> None:
        self.events_path = tmp_path / f"events-{time.monotonic_ns()}.jsonl"
        self.events_path.touch()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", EVENT_WORKER, url, namespace, task_file, str(workers),
             str(self.events_path), str(stop_timeout), str(flush_stale_timeout)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid

    def events(self, name: str | None = None) -> list[dict]:
        lines = self.events_path.read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return [rec for rec in records if name is None or rec["event"] == name]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a test that failed mid-SIGSTOP
            self.process.kill()
        self.process.wait(10)
