"""The node's log format: one JSON object per line (Django's LOGGING and gunicorn's logconfig_dict use it).

Free of Django, so gunicorn's master can format its own lines with it before Django is set up.
"""

import logging
import logging.config
from datetime import UTC, datetime

import orjson

# The line breaks JSON leaves unescaped in strings but that Python's str.splitlines (and other tools) split
# lines at: a path with U+2028 in it made one request's log line seven lines to them.
_UNICODE_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class JsonLineFormatter(logging.Formatter):
    """A log record as one JSON object per line, for every reader's idea of a line: time, level, logger,
    message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode().translate(_UNICODE_LINE_BREAKS)


def configure_logging(logging_settings: dict) -> None:
    """Django's LOGGING_CONFIG: the settings' dictConfig, and Python's warnings as log records (logger
    `py.warnings`), so a library's warning is a JSON line too. Printed as Python prints them, torch's
    warning about a TorchScript archive sent as a dataset was two bare text lines in the node's log."""
    logging.config.dictConfig(logging_settings)
    logging.captureWarnings(True)
