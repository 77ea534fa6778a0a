"""Log setup for every command: text for people, JSON lines for log pipelines.

``inventory-engine --log-format json ...`` writes one JSON object per line on
stderr: ``time`` (UTC, RFC 3339, milliseconds), ``level``, ``logger``,
``message``, ``pid``, and when they apply ``request_id``, ``worker``,
``exception`` (the formatted traceback) and any ``extra=`` fields of the call.
Newlines inside a message or traceback are escaped by JSON, so one record is
always one line.

``request_id`` is the id of the RPC being served when the line was logged: the
id :class:`~engine.service.interceptors.RequestIdInterceptor` puts in its
context variable and returns to the client in the ``x-request-id`` trailing
metadata (and in the error details), so a client's error report leads straight
to the server's log lines. The text format appends it as ``request_id=...``.
Lines logged outside any RPC have none.

gRPC's C core writes its own lines to stderr, outside Python logging (set
``GRPC_VERBOSITY=ERROR`` to keep them to errors).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "ContextFilter", "JsonFormatter", "TextFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "worker",
}


def current_request_id() -> str:
    """The request id of the RPC being served in this context, or ''."""
    # Looked up through sys.modules rather than imported: client commands log
    # too, and importing the server side for them would cost ~0.2 s. Without
    # the interceptors module loaded, no RPC is being served.
    interceptors = sys.modules.get("engine.service.interceptors")
    if interceptors is None:
        return ""
    return str(interceptors.current_request_id.get())


class ContextFilter(logging.Filter):
    """Puts ``request_id`` (and the worker index, if any) on every record."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        # A record may already carry one (logged from another context and
        # handed over); keep it.
        if not getattr(record, "request_id", ""):
            record.request_id = current_request_id()
        record.worker = self.worker
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        worker = getattr(record, "worker", None)
        request_id = getattr(record, "request_id", "")
        if worker is not None:
            text = f"worker-{worker} {text}"
        if request_id:
            # After the message and before a traceback, so it stays on the first line.
            first, newline, rest = text.partition("\n")
            text = f"{first} request_id={request_id}{newline}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            out["request_id"] = request_id
        worker = getattr(record, "worker", None)
        if worker is not None:
            out["worker"] = worker
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def configure_logging(
    level: str | int = "INFO",
    log_format: str = "text",
    *,
    worker: int | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one of ours; returns it.

    An unknown level name falls back to INFO (as the CLI always did); an
    unknown format is an error.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter(worker))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
