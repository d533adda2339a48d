"""Loads fine in the master (`greenq run` registers it there) but not in a
worker child (`python -m greenq.child`): each child's attempt is appended to
the file $PROC_BOOT_CRASH_LOG, then the import raises, or calls os._exit(1)
when $PROC_BOOT_CRASH_HOW is "exit"."""
import os
import sys

id = "proc.boot_crash"
timeout = 1.0


def perform(params):
    return None


_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
if _spec is not None and _spec.name == "greenq.child":
    _log = os.environ.get("PROC_BOOT_CRASH_LOG")
    if _log:
        with open(_log, "a") as _file:
            _file.write(f"{os.getpid()}\n")
    if os.environ.get("PROC_BOOT_CRASH_HOW") == "exit":
        os._exit(1)
    raise RuntimeError("proc_boot_crash refuses to load in a worker child")
