"""What several task files of tests/tasks share: one Redis client per URL,
and one way to append a line to a witness file.

Task files are loaded by path (as greenq_tasks_<name>, not as a package),
in the test process, in `greenq run` and in worker children, so a sibling
import would depend on sys.path. They load this file by path instead:

    client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]

Each task file so gets its own copy (and its own clients).
"""
import os

import redis

_clients = {}


def client(url):
    """The Redis client of this task file for `url`, made on first use."""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


def append_line(path, line):
    """Append `line` and a newline to the file `path` in one O_APPEND write, so
    lines of concurrent runs in several processes never mix, and the file
    survives whatever happens to Redis."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
