"""The greenq exception tree: one root, a few branches, each raised for one reason."""

from typing import Any


class GreenQError(Exception):
    """Root of every error greenq raises on purpose."""


class TaskDefinitionError(GreenQError):
    """Raised when a task module, file or decorator does not define a valid task,
    or a task id is registered twice."""


class ParamsError(GreenQError, ValueError):
    """Raised when a job's arguments (task id, resource id, retries, params)
    are invalid or the serializer cannot carry the params."""


class JobDecodeError(GreenQError):
    """Raised when a job record read from Redis cannot be decoded."""

    job: Any = None  # the Job as far as it decoded (params None), when known


class UnknownTaskError(GreenQError):
    """Raised when a fetched job names a task this process has not registered."""


class LeaseLostError(GreenQError):
    """Raised (as an `error` event) when a job finished after a stale flush took
    its lease away; the late finish changed nothing in Redis."""


class NotPatchedError(GreenQError):
    """Raised by `start()` in a process whose sockets gevent has not patched:
    the workers would block the whole program."""


class StateError(GreenQError):
    """Raised when a call does not fit the queue's life cycle (register after
    start, start after shutdown)."""


class BrokerError(GreenQError):
    """Raised (as an `error` event) when Redis cannot be reached or answers
    something greenq does not understand."""


class ChildGaveUp(GreenQError):
    """Raised (as an `error` event, and `greenq run` exits with status 3) when
    worker children keep dying before they are ready (a task module that fails
    to import, Redis refusing them): restarting them would be a fork loop."""


class WorkerShutdown(BaseException):
    """Thrown into a job's greenlet when a shutdown gives it back to the queue.
    A BaseException, so a task's `except Exception` cannot swallow it."""


class TimeLimitExceeded(BaseException):
    """Raised inside a job that ran longer than its task's `time_limit`; the
    job fails (and is retried if it has retries left). A BaseException, so a
    task's `except Exception` cannot swallow it."""


class LoopCrashedError(GreenQError):
    """Raised (as an `error` event) when a worker process' fetch or commit
    loop died of an unexpected exception (a bug); the loop starts again."""


class JobCancelled(BaseException):
    """Thrown into a running job's greenlet where it next yields after
    `cancel()` reached its process; the job then ends "cancelled" and is not
    retried. A BaseException, so a task's `except Exception` cannot swallow it."""


class JobNotFoundError(GreenQError, LookupError):
    """Raised by `wait()` when the job id is unknown, or its record expired
    (result_ttl) or was deleted."""


class WaitTimeout(GreenQError, TimeoutError):
    """Raised by `wait()` when its timeout passed before the job ended."""
