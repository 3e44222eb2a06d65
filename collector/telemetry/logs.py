"""Log set-up for every ccbridge process: text or JSON lines on stderr, with structured fields.

A log call may pass ``extra=fields(...)``; the JSON format puts each field at the top level of the line
(``destination``, ``attempt``, ``status``, ``records``, ``error``, ...); in the text format the message says the
same in words. docs/operations.md lists the fields.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

RESERVED = frozenset({"time", "level", "logger", "message", "pid", "exception"})


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call carrying structured fields (None values are left out)."""
    return {"fields": {k: v for k, v in values.items() if v is not None}}


class JsonFormatter(logging.Formatter):
    """One JSON object per log line; structured fields (``extra=fields(...)``) as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for k, v in extra.items():
                doc[k if k not in RESERVED else f"field.{k}"] = v
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger[pid]: message``; the message already says what the structured fields hold."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
