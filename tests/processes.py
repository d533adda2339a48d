"""Processes seen from outside, through /proc: whether one lives, its title,
and the greenq worker children of a master. Shared by the master tests
(tests/test_master.py) and the fault suite (tests/faults/sidelog.py)."""

from __future__ import annotations

import os


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def title(pid: int) -> str:
    """The process title greenq sets (its command line when it set none)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def worker_children(parent: int, ready_only: bool = False) -> list[int]:
    """Live greenq worker children of `parent`; `ready_only`: past their boot
    (their process title shows their load)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is None or stat[0] == "Z" or stat[1] != parent:
            continue
        name = title(int(entry))
        if name.startswith("greenq: worker") or "greenq.child" in name:
            if not ready_only or name.endswith("busy"):
                pids.append(int(entry))
    return sorted(pids)
