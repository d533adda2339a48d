"""Logging set-up for `greenq run` and its worker children: text lines for
people, or one JSON object per line (`--log-format json`) for a log
pipeline (Loki, Elasticsearch, CloudWatch), formatted by python-json-logger.

A JSON line holds `time`, `level`, `logger`, `pid` and `message`; lines
about one job (greenq/joblog.py) add `job_id`, `task`, `resource` and
`attempt`, and, when the job is traced (greenq/tracing.py), `trace_id` and
`span_id`, so a log search and a trace viewer meet. Any other line logged
inside a recording span (a task's own logging, say) gets the span's ids as
well. A traceback stays inside its line (`exc_info`, or the message of a
failed job), escaped, never spread over several lines.

Only the CLI calls `setup`: greenq installs no handler on import.
"""

from __future__ import annotations

import logging
import sys

from . import tracing

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s greenq[%(process)d] %(levelname)s %(name)s: %(message)s"
# Fields every JSON line has (and "time", ISO 8601 in UTC), renamed to what
# log pipelines expect.
JSON_FIELDS = "%(levelname)s %(name)s %(process)d %(message)s"
JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}

_in_use = "text"


class TraceIds(logging.Filter):
    """Adds trace_id / span_id of the current span to a record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            found = tracing.current_ids()
            if found is not None:
                record.trace_id, record.span_id = found
        return True


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("text" or "json")."""
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    if log_format != "json":
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES, timestamp="time")


def setup(level: int | str, log_format: str = "text") -> None:
    """Log records of `level` and above to stderr, in `log_format`, unless
    the program configured logging already (as logging.basicConfig)."""
    global _in_use
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    if log_format == "json" and tracing.enabled:
        handler.addFilter(TraceIds())
    _in_use = log_format
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level,
                        handlers=[handler])


def in_use() -> str:
    """The format `setup` was last called with: the master hands it to its children."""
    return _in_use
