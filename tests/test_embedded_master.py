"""An embedding program (a gevent server) that starts worker children."""

import os
import socket

from conftest import TASKS, wait_until


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def test_children_of_an_embedded_master_do_not_hold_the_servers_listening_socket(make_queue):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listening_inode = f"socket:[{os.fstat(listener.fileno()).st_ino}]"
    queue = make_queue(os.path.join(TASKS, "embed_noop.py"), child_process_count=2, worker_count=5)
    done = []
    queue.on("job_success", done.append)
    queue.start()
    try:
        children = wait_until(lambda: [c for c in queue._runner.children.values() if c.ready.is_set()]
                              if len(queue._runner.children) == 2 and all(
                                  c.ready.is_set() for c in queue._runner.children.values())
                              else None)
        assert listening_inode in socket_inodes(os.getpid())
        for child in children:
            assert listening_inode not in socket_inodes(child.pid)
            with open(f"/proc/{child.pid}/cmdline", "rb") as cmdline:
                assert b"greenq: worker" in cmdline.read()
        queue.submit_job("embed.noop", params={"n": 1})
        wait_until(lambda: done)
        assert done[0].task_id == "embed.noop" and done[0].params == {"n": 1}
    finally:
        listener.close()
