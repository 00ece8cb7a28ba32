"""Logging set-up: human-readable lines, or one JSON object per event for log pipelines."""

import json
import logging
import time
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from ``extra=`` and is the event's data
# (but for uvicorn's copy of its message with terminal colours).
_NOT_EVENT_DATA = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the event's fields given as ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {key: item for key, item in vars(record).items() if key not in _NOT_EVENT_DATA}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Send every logger's records to stderr in ``log_format``; SQLAlchemy's capped at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # SQLAlchemy at debug logs every statement and row; sqlprobe's own debug lines are what helps here.
    logging.getLogger("sqlalchemy").setLevel(max(logging.WARNING, logging.root.level))
