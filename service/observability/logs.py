"""Logging set-up: one JSON object per line (or plain text for a terminal), every line stamped
with the request id of the request it belongs to."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
from collections.abc import MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The X-Request-ID of the request being handled in this task, if any.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_record(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """The request's entry for its access-log line and metrics, kept in the ASGI scope: the
    edge writes the method, status and latency, a route adds what only it knows (``model``,
    ``version``, ``batch_size``)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    record: dict[str, Any] = state.setdefault("request_record", {})
    return record


# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged too.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}
        return f"{base} {json.dumps(extra, default=str)}" if extra else base


class BufferedStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Records to standard error (or ``fd``) through a block buffer, written out every
    ``interval_s`` (by a daemon thread), at once for warnings and errors, and at exit.

    A plain ``StreamHandler`` flushes after every record: with one access line per request,
    that was a ``write`` system call per request, 6% of the event loop's time at 64
    connections (py-spy). Access lines may now reach the log up to ``interval_s`` late.
    """

    def __init__(self, interval_s: float = 0.2, fd: int | None = None) -> None:
        stream = open(  # noqa: SIM115 -- it lives as long as the handler; close() closes it
            sys.stderr.fileno() if fd is None else fd,
            "w",
            buffering=1 << 16,
            encoding="utf-8",
            closefd=False,
        )
        super().__init__(stream)
        self._stopped = threading.Event()
        threading.Thread(
            target=self._flush_every, args=(interval_s,), name="log-flush", daemon=True
        ).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flush_every(self, interval_s: float) -> None:
        while not self._stopped.wait(interval_s):
            self.flush()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        stream = self.stream
        super().close()
        stream.close()


def configure_logging(level: str, fmt: str) -> dict[str, Any]:
    """Set up logging: every logger, uvicorn's included, through one handler on the root
    logger. Returns the configuration as uvicorn's ``log_config`` (uvicorn applies it again
    at start-up; its own access log stays off: the service writes one line per request)."""
    # One access line per request makes logging a hot path. What the formatters never print
    # need not be gathered per record (the logging HOWTO's "Optimization" section): the
    # caller's file and line (a stack walk), thread, process and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"()": TextFormatter, "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestIdFilter}},
        "formatters": {"service": formatter},
        "handlers": {
            "stderr": {
                "()": BufferedStderrHandler,
                "filters": ["request_id"],
                "formatter": "service",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }
    logging.config.dictConfig(config)
    return config
