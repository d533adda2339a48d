"""`greenq stats --watch` on a real pseudo-terminal: it redraws the counts
in place with their rates until Ctrl-C, then exits 0 without a traceback."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A command whose stdin, stdout and stderr are a pseudo-terminal."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenq", *args], stdin=slave, stdout=slave, stderr=slave,
            env=dict(os.environ, COLUMNS="80", LINES="30"), start_new_session=True)
        os.close(slave)
        self.raw = b""

    def read_until(self, predicate, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.raw):
            if time.monotonic() > deadline:
                pytest.fail(f"not on the screen within {timeout} s:\n{self.text()}")
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # the command exited: its side of the terminal closed
                    return

    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def open_(*args: str) -> Terminal:
        opened.append(Terminal(*args))
        return opened[-1]

    yield open_
    for term in opened:
        term.close()


def draws(raw: bytes) -> int:
    return raw.count(b"Ctrl-C to quit")


def test_watch_redraws_counts_and_rates_in_place_until_ctrl_c(terminal, make_queue, redis_url,
                                                              namespace):
    queue = make_queue()
    queue.submit_jobs([{"task_id": "watched"} for _ in range(3)])
    term = terminal("stats", "--watch", "--interval", "0.2", "--redis-url", redis_url,
                    "--namespace", namespace)
    term.read_until(lambda raw: draws(raw) >= 3)  # the empty frame, then two with numbers
    assert re.search(r"pending\s+│\s+3\s+│\s+0/s", term.text())
    queue.submit_jobs([{"task_id": "watched"} for _ in range(20)])
    term.read_until(lambda raw: re.search(rb"pending\s+\S+\s+23\s", ANSI.sub(b"", raw)))
    # The draw after the submit shows pending rising, in jobs per second.
    assert re.search(r"pending\s+│\s+23\s+│\s+\+\d+\.\d\d/s", term.text())
    assert b"\x1b[1A" in term.raw  # redrawn in place: the cursor went back up
    assert term.text().count("greenq " + namespace + ":default") >= 3
    # Jobs ended by outcome, from the counters the scripts keep.
    assert re.search(r"cancelled total\s+│\s+0\s", term.text())
    ids = queue.submit_jobs([{"task_id": "watched"} for _ in range(2)])
    assert all(queue.cancel(job_id) for job_id in ids)
    term.read_until(lambda raw: re.search(rb"cancelled total\s+\S+\s+2\s", ANSI.sub(b"", raw)))

    term.process.send_signal(signal.SIGINT)
    assert term.process.wait(10) == 0
    assert "Traceback" not in term.text() and "KeyboardInterrupt" not in term.text()


def test_watch_refuses_json_and_interval_needs_watch(redis_url, namespace):
    for args, why in ((["--watch", "--json"], "--json and --watch do not go together"),
                      (["--interval", "1"], "--interval goes with --watch")):
        done = subprocess.run([sys.executable, "-m", "greenq", "stats", *args, "--redis-url",
                               redis_url, "--namespace", namespace], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2 and why in done.stderr, done.stderr
