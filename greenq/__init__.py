"""greenq: a distributed job queue for gevent, backed by Redis.

`GreenQueue` is imported on first use, so `import greenq` (a task module's
`@greenq.task`, the CLI, a child process) loads neither redis-py nor ssl
before gevent has had the chance to patch them.
"""

from typing import TYPE_CHECKING

from .current import current_job
from .errors import (BrokerError, ChildGaveUp, GreenQError, JobCancelled, JobDecodeError,
                     JobNotFoundError, LeaseLostError, LoopCrashedError, NotPatchedError,
                     ParamsError, StateError, TaskDefinitionError, TimeLimitExceeded,
                     UnknownTaskError, WaitTimeout, WorkerShutdown)
from .job import Job
from .registry import task

if TYPE_CHECKING:  # type checkers see the class; at run time __getattr__ imports it
    from .queue import GreenQueue

__version__ = "0.1.0"

__all__ = ["GreenQueue", "task", "Job", "current_job", "GreenQError", "TaskDefinitionError", "ParamsError",
           "JobDecodeError", "UnknownTaskError", "LeaseLostError", "NotPatchedError",
           "StateError", "BrokerError", "ChildGaveUp", "LoopCrashedError", "TimeLimitExceeded",
           "WorkerShutdown", "JobCancelled", "JobNotFoundError", "WaitTimeout", "__version__"]


def __getattr__(name: str):
    if name == "GreenQueue":
        from .queue import GreenQueue

        return GreenQueue
    raise AttributeError(f"module 'greenq' has no attribute {name!r}")
