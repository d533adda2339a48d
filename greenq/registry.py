"""Task registration: modules, files and `@greenq.task` functions. No Redis."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable

from .config import (DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_DELAY, DEFAULT_RETRY_DELAY_MAX,
                     DEFAULT_TASK_TIMEOUT, MAX_ID_LENGTH)
from .errors import TaskDefinitionError

_DECORATED = "__greenq_task__"


_PERIODS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` starts in any window of `period_ms` (Redis' clock)."""
    count: int
    period_ms: int

    def __str__(self) -> str:
        unit = {ms: unit for unit, ms in _PERIODS_MS.items()}[self.period_ms]
        return f"{self.count}/{unit}"


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    perform: Callable[[Any], Any]
    timeout: float = DEFAULT_TASK_TIMEOUT
    time_limit: float | None = None  # seconds a run may take; None: no limit
    retry_delay: float = DEFAULT_RETRY_DELAY        # seconds before the first retry
    retry_backoff: float = DEFAULT_RETRY_BACKOFF    # each later retry waits this factor longer
    retry_delay_max: float = DEFAULT_RETRY_DELAY_MAX
    rate_limit: RateLimit | None = None

    def retry_wait(self, retry: int, draw: Callable[[float, float], float]) -> float:
        """Seconds the `retry`-th retry (1 for the first) waits: drawn by
        `draw` (random.uniform) from [d/2, d], d = min(retry_delay_max,
        retry_delay * retry_backoff ** (retry - 1)), so that jobs failing
        together do not come back together."""
        if not self.retry_delay:
            return 0.0
        try:
            longest = min(self.retry_delay_max,
                          self.retry_delay * self.retry_backoff ** max(retry - 1, 0))
        except OverflowError:
            longest = self.retry_delay_max
        return draw(longest / 2, longest)

    @property
    def options(self) -> tuple:
        """What a definition sets besides `perform`: two equal ones are the same task."""
        return (self.id, self.timeout, self.time_limit, self.retry_delay, self.retry_backoff,
                self.retry_delay_max, self.rate_limit)


def _seconds(value: Any, name: str, task_id: Any, origin: str, *, low: float = 0.0,
             inclusive: bool = True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and (value >= low if inclusive else value > low) and value < float("inf")
    if not ok:
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise TaskDefinitionError(f"{origin}: {name} of task {task_id!r} must be a finite number "
                                  f"{bound}, not {value!r}")
    return float(value)


def parse_rate_limit(value: Any, task_id: Any = None, origin: str = "rate_limit") -> RateLimit | None:
    """"N/s", "N/m" or "N/h" (N a whole number >= 1) -> RateLimit; None stays None."""
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else None
    count, _, unit = (text or "").partition("/")
    if text is None or unit not in _PERIODS_MS or not count.isdigit() or int(count) < 1:
        raise TaskDefinitionError(
            f"{origin}: rate_limit of task {task_id!r} must be \"N/s\", \"N/m\" or \"N/h\" "
            f"with a whole N >= 1 (at most N starts in any second, minute or hour), "
            f"not {value!r}")
    return RateLimit(int(count), _PERIODS_MS[unit])


def _check(task_id: Any, perform: Any, timeout: Any, origin: str, time_limit: Any = None,
           retry_delay: Any = DEFAULT_RETRY_DELAY, retry_backoff: Any = DEFAULT_RETRY_BACKOFF,
           retry_delay_max: Any = DEFAULT_RETRY_DELAY_MAX, rate_limit: Any = None) -> Task:
    if not isinstance(task_id, str) or not task_id:
        raise TaskDefinitionError(f"{origin}: task id must be a non-empty str, not {task_id!r}")
    if len(task_id) > MAX_ID_LENGTH:
        raise TaskDefinitionError(f"{origin}: task id is {len(task_id)} characters; "
                                  f"at most {MAX_ID_LENGTH}")
    if not callable(perform):
        raise TaskDefinitionError(f"{origin}: perform of task {task_id!r} is not callable")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise TaskDefinitionError(f"{origin}: timeout of task {task_id!r} must be a number > 0")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(
            time_limit, (int, float)) or not time_limit > 0):
        raise TaskDefinitionError(
            f"{origin}: time_limit of task {task_id!r} must be a number > 0, or None")
    delay = _seconds(retry_delay, "retry_delay", task_id, origin)
    backoff = _seconds(retry_backoff, "retry_backoff", task_id, origin, low=1.0)
    longest = _seconds(retry_delay_max, "retry_delay_max", task_id, origin)
    if longest < delay:
        raise TaskDefinitionError(f"{origin}: retry_delay_max of task {task_id!r} ({longest:g} s) "
                                  f"is shorter than its retry_delay ({delay:g} s)")
    return Task(task_id, perform, float(timeout), None if time_limit is None else float(time_limit),
                delay, backoff, longest, parse_rate_limit(rate_limit, task_id, origin))


def task(task_id: str, timeout: float = DEFAULT_TASK_TIMEOUT,
         time_limit: float | None = None, *, retry_delay: float = DEFAULT_RETRY_DELAY,
         retry_backoff: float = DEFAULT_RETRY_BACKOFF,
         retry_delay_max: float = DEFAULT_RETRY_DELAY_MAX,
         rate_limit: str | None = None) -> Callable:
    """Decorator: mark `perform(params)` as task `task_id` of its module."""
    def mark(perform: Callable[[Any], Any]) -> Callable[[Any], Any]:
        setattr(perform, _DECORATED,
                _check(task_id, perform, timeout, "@greenq.task", time_limit, retry_delay,
                       retry_backoff, retry_delay_max, rate_limit))
        return perform
    return mark


def _module_name(path: str) -> str:
    """The sys.modules name of the task file at `path`: `greenq_tasks_<base
    name>` (readable in logger names), unless a file of that base name in
    another folder already holds it; then the name also carries a digest of
    the path, so neither module replaces the other in sys.modules (pickle,
    dataclasses and `sys.modules[__name__]` look modules up there). Children
    load the same files in the same order, so they pick the same names."""
    name = "greenq_tasks_" + os.path.splitext(os.path.basename(path))[0]
    holder = sys.modules.get(name)
    if holder is None or getattr(holder, "__file__", None) == path:
        return name
    return f"{name}_{hashlib.sha1(path.encode()).hexdigest()[:10]}"


def load_module(spec: str | types.ModuleType) -> types.ModuleType:
    """A module object from a module, a dotted name or a .py path;
    TaskDefinitionError when there is none or it does not load."""
    if isinstance(spec, types.ModuleType):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TaskDefinitionError(f"a task spec is a module, a dotted name or a .py path, not {spec!r}")
    spec = os.fspath(spec)
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise TaskDefinitionError(f"task file not found: {path}")
        name = _module_name(path)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise TaskDefinitionError(f"task file {path} cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, Exception):
                raise _cannot_load(None, path, exc) from exc
            raise
        return module
    try:
        return importlib.import_module(spec)
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name and (
                spec == exc.name or spec.startswith(exc.name + ".")):
            raise TaskDefinitionError(f"no task module named {spec!r}") from exc
        raise _cannot_load(spec, _origin(spec), exc) from exc


def _origin(name: str) -> str | None:
    """The file of module `name`, found without running it."""
    try:
        found = importlib.util.find_spec(name)
    except Exception:  # its package does not load either: the error names that
        return None
    return found.origin if found is not None and found.has_location else None


def _cannot_load(name: str | None, path: str | None, exc: Exception) -> TaskDefinitionError:
    """One line for a task module (`name`, or None for a file loaded by path)
    that raised while it was loading (a syntax error, a failed import,
    anything its top level raised): the file, the line of it that failed,
    and the error, with where it is for a syntax error in another file."""
    path = path and os.path.abspath(path)
    what = f"task file {path}" if name is None else f"task module {name!r}" + (
        f" ({path})" if path else "")
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if path and os.path.abspath(frame.filename) == path]
    if isinstance(exc, SyntaxError):
        detail = f"{type(exc).__name__}: {exc.msg}"
        if exc.filename and path and os.path.abspath(exc.filename) == path:
            lines.append(exc.lineno)
        elif exc.filename:
            detail += f" ({exc.filename}, line {exc.lineno})"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    where = f", line {lines[-1]}" if lines and lines[-1] else ""
    return TaskDefinitionError(" ".join(f"cannot load {what}{where}: {detail}".splitlines()))


def tasks_of(module: types.ModuleType) -> list[Task]:
    """Every task a module defines: its `id`/`perform` pair and its decorated functions."""
    found = []
    origin = getattr(module, "__file__", None) or module.__name__
    if hasattr(module, "id") or hasattr(module, "perform"):
        found.append(_check(getattr(module, "id", None), getattr(module, "perform", None),
                            getattr(module, "timeout", DEFAULT_TASK_TIMEOUT), origin,
                            getattr(module, "time_limit", None),
                            getattr(module, "retry_delay", DEFAULT_RETRY_DELAY),
                            getattr(module, "retry_backoff", DEFAULT_RETRY_BACKOFF),
                            getattr(module, "retry_delay_max", DEFAULT_RETRY_DELAY_MAX),
                            getattr(module, "rate_limit", None)))
    for value in vars(module).values():
        marked = getattr(value, _DECORATED, None)
        if isinstance(marked, Task) and marked not in found:
            found.append(marked)
    if not found:
        raise TaskDefinitionError(f"{origin}: defines no task (an `id` and `perform`, or @greenq.task)")
    return found


def _same_decorated(known: Task | None, found: Task) -> bool:
    """Whether `found` is the decorated task `known` again: the same object,
    or the same definition (file and line) when its file was loaded twice
    under two module names (by path, and imported by name elsewhere)."""
    if known is None:
        return False
    # Read before the identity checks below, which mypy takes for narrowing.
    code, other = getattr(known.perform, "__code__", None), getattr(found.perform, "__code__", None)
    options, found_options = known.options, found.options
    if getattr(known.perform, _DECORATED, None) is not known \
            or getattr(found.perform, _DECORATED, None) is not found:
        return False
    if known is found:
        return True
    if code is None or other is None:
        return False
    return ((code.co_filename, code.co_firstlineno) == (other.co_filename, other.co_firstlineno)
            and options == found_options)


class Registry:
    """The tasks one queue can run, by id."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.sources: list[str] = []  # how each module was named, for child processes

    def register(self, spec: str | types.ModuleType) -> list[Task]:
        module = load_module(spec)
        source = self._source(spec, module)
        if source in self.sources:
            names = ", ".join(repr(t.id) for t in tasks_of(module))
            raise TaskDefinitionError(f"task id {names} is registered twice: {source} was "
                                      "registered already")
        # A decorated task that several modules hold (one defines it, others
        # import it, e.g. a module that gathers tasks) is one task: it is
        # registered once, by whichever of them is registered first, and the
        # others skip it. Two different definitions of one id are refused.
        new = [t for t in tasks_of(module) if not _same_decorated(self.tasks.get(t.id), t)]
        ids = [t.id for t in new]
        for task_id in ids:
            if task_id in self.tasks or ids.count(task_id) > 1:
                raise TaskDefinitionError(f"task id {task_id!r} is registered twice")
        for t in new:
            self.tasks[t.id] = t
        self.sources.append(source)
        return new

    @staticmethod
    def _source(spec: Any, module: types.ModuleType) -> str:
        """How a child process finds the same module: its absolute path when
        it was loaded from a file (or is a script), else its dotted name."""
        path = getattr(module, "__file__", None)
        loaded_from_file = module.__name__ == "__main__" or module.__name__.startswith("greenq_tasks_")
        if path and (loaded_from_file or (isinstance(spec, str) and spec.endswith(".py"))):
            return os.path.abspath(path)
        return module.__name__

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def rate_limits(self) -> list:
        """Flat task id, starts, period ms triples, as fetch.lua takes them."""
        flat: list = []
        for t in self.tasks.values():
            if t.rate_limit is not None:
                flat += [t.id, t.rate_limit.count, t.rate_limit.period_ms]
        return flat

    def timeouts_ms(self) -> list:
        """Flat task id, timeout ms pairs, as fetch.lua takes them."""
        flat: list = []
        for t in self.tasks.values():
            flat += [t.id, int(t.timeout * 1000)]
        return flat
