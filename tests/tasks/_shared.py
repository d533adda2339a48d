"""What several task files of tests/tasks share: one Redis client per URL.

Task files are loaded by path (as greenq_tasks_<name>, not as a package),
in the test process, in `greenq run` and in worker children, so a sibling
import would depend on sys.path. They load this file by path instead:

    client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]

Each task file so gets its own copy (and its own clients).
"""
import redis

_clients = {}


def client(url):
    """The Redis client of this task file for `url`, made on first use."""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]
