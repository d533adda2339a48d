"""greenq: a distributed job queue for gevent, backed by Redis."""

from .errors import (BrokerError, GreenQError, JobDecodeError, LeaseLostError, NotPatchedError,
                     ParamsError, StateError, TaskDefinitionError, UnknownTaskError,
                     WorkerShutdown)
from .job import Job
from .queue import GreenQueue
from .registry import task

__version__ = "0.1.0"

__all__ = ["GreenQueue", "task", "Job", "GreenQError", "TaskDefinitionError", "ParamsError",
           "JobDecodeError", "UnknownTaskError", "LeaseLostError", "NotPatchedError",
           "StateError", "BrokerError", "WorkerShutdown", "__version__"]
