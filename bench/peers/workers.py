"""A peer's worker processes, started as real subprocesses of the peer's own
virtualenv and stopped cleanly: SIGTERM, then SIGKILL after a bound.

Each command runs in its own session (process group), because some of them
fork their own children (rq worker-pool, dramatiq-gevent); the signals go to
that group, i.e. only to processes this module started and their children.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time

log = logging.getLogger("bench.peers.workers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL


class WorkerGroup:
    """`with WorkerGroup(commands, env): ...` -- every command running meanwhile."""

    def __init__(self, commands: list[list[str]], env: dict[str, str]) -> None:
        self.commands = commands
        self.env = {**os.environ, **env,
                    "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        self.processes: list[subprocess.Popen] = []
        self.logs: list = []

    def start(self) -> "WorkerGroup":
        for command in self.commands:
            output = tempfile.TemporaryFile(mode="w+", prefix="bench-peer-worker-")
            self.logs.append(output)
            log.debug("starting %s", " ".join(command))
            self.processes.append(subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True))
        return self

    def alive(self) -> bool:
        return not any(self._has_exited(process) for process in self.processes)

    def output_tail(self, chars: int = 3000) -> str:
        tails = []
        for command, output in zip(self.commands, self.logs):
            output.seek(0)
            tails.append(f"--- {' '.join(command)}\n{output.read()[-chars:]}")
        return "\n".join(tails)

    def stop(self) -> None:
        for process in self.processes:
            self._signal(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in self.processes:
            if not self._exited_unreaped(process, deadline):
                log.warning("worker %s ignored SIGTERM for %.0f s: SIGKILL", process.pid, STOP_GRACE)
            # Children of a pool may outlive their parent; they share its group.
            # The parent is not reaped yet, so its pid (the group id) cannot
            # have been reused by an unrelated process.
            self._signal(process, signal.SIGKILL)
            process.wait(10)
        for output in self.logs:
            output.close()

    @staticmethod
    def _exited_unreaped(process: subprocess.Popen, deadline: float) -> bool:
        """Wait until the process has exited, without reaping it."""
        while time.monotonic() < deadline:
            if WorkerGroup._has_exited(process):
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _has_exited(process: subprocess.Popen) -> bool:
        """Without reaping it (poll() would), so its group id stays ours."""
        if process.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    @staticmethod
    def _signal(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)  # the group this module created for it
        except ProcessLookupError:
            pass

    def __enter__(self) -> "WorkerGroup":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
