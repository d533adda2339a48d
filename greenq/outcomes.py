"""What the finishing scripts (complete.lua, fail.lua, give_back.lua,
give_back_unknown.lua) answer for each job: one named table, so no bare number stands for an
outcome anywhere else (bullmq's `error_code.py` does the same)."""

from __future__ import annotations

from enum import IntEnum


class Outcome(IntEnum):
    """One job's result code from a finishing script."""

    LEASE_LOST = -1  # a stale flush took the lease away: nothing was changed
    NO_RECORD = 0    # the job's record is gone (deleted, evicted): nothing was changed
    DONE = 1         # finished as asked (succeeded, failed for good, given back),
                     # now or by an earlier send of the same finish
    RETRIED = 2      # fail.lua only: queued again with one retry fewer
    DELAYED = 3      # give_back_unknown.lua only: waits for a worker that knows its task
    CANCELLED = 4    # complete.lua, fail.lua: a cancel reached the job; it ended "cancelled"

    def why_lost(self) -> str:
        """What a LEASE_LOST or NO_RECORD finish did, for the error event."""
        if self is Outcome.NO_RECORD:
            # The script passes on a resource the vanished record held
            # (include/release.lua release_vanished), and changes nothing else.
            return ("its record is gone (evicted or deleted); the resource it held, if any, "
                    "passed to the next job")
        return "its lease was taken away by a stale flush; nothing was changed in Redis"
