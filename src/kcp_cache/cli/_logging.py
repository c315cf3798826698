"""Logging set-up for the binaries: stdlib logging, text or one JSON object per line."""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any, Final

import orjson

__all__ = ["JSONFormatter", "setup_logging"]

_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", …extra, "exc"}`` — one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(verbosity: int, log_format: str) -> None:
    """Configure the root logger on stderr.

    Verbosity follows kube's ``-v``: 0–1 info, 2+ debug for our loggers, 3+ one access
    line per request, 4+ debug for the libraries (uvicorn) too.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 4 else logging.INFO)
    logging.getLogger("kcp_cache").setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    # One line per request from -v 3 on (kube logs requests at -v 3 too).
    access_level = logging.DEBUG if verbosity >= 3 else logging.INFO
    logging.getLogger("kcp_cache.server.access").setLevel(access_level)
    # uvicorn's own "Started/Finished server process" lines duplicate ours.
    uvicorn_level = logging.DEBUG if verbosity >= 4 else logging.WARNING
    logging.getLogger("uvicorn.error").setLevel(uvicorn_level)
