"""Loads at once, except in a worker child (`python -m greenq.child`) while
the file named by $PROC_SLOW_BOOT_FLAG exists: then its import takes a
minute, so the child stays "booting"."""
import os
import sys
import time

id = "proc.slow_boot"
timeout = 1.0


def perform(params):
    return None


_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
_flag = os.environ.get("PROC_SLOW_BOOT_FLAG")
if _spec is not None and _spec.name == "greenq.child" and _flag and os.path.exists(_flag):
    time.sleep(60)
