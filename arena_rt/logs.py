"""Logging set-up: one line per record, UTC timestamps, to stderr."""

from __future__ import annotations

import logging
import re
import sys
import time


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    install_redaction()
    # Chatty libraries: their INFO lines are per request or per migration step.
    for name in ("httpx", "alembic", "uvicorn.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


_CREDENTIALS = re.compile(
    r"(?i)(authorization:\s*\S+\s+)\S+"  # a logged request header
    r"|(\"token\"\s*:\s*\")[^\"]*"  # the auth frame (also when truncated)
    r"|\b(ak_[0-9a-f]{16}_|st_)[A-Za-z0-9_.\-]+"  # an API key or a session token anywhere
)


def _redact(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2) or match.group(3)) + "[redacted]"


class RedactCredentials(logging.Filter):
    """Rewrites records that would carry an API key or a session token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _CREDENTIALS.sub(_redact, message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = RedactCredentials()
# uvicorn.error is also the WebSocket protocol's logger: at DEBUG it logs handshake headers
# (Authorization) and frames (the auth frame).
REDACTED_LOGGERS = ("uvicorn.error", "uvicorn.access", "arena_rt")


def install_redaction() -> None:
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
