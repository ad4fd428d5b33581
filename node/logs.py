"""Structured logging: ``text`` for people, ``json`` (one object a line) for machines.

Every record carries a timestamp, whichever library logs it. py-libp2p, on import,
detaches its ``libp2p`` logger from the root (``propagate = False``, no handler) unless
``LIBP2P_DEBUG`` is set, so its warnings went to Python's last-resort handler: bare
messages, several lines each, with no time or level. ``setup_logging`` re-attaches it
to the node's handler, and the text format folds the multi-line messages and tracebacks
of such libraries into one line (``" | "`` between the lines). The node's own
tracebacks stay on several lines, indented under their timestamped first line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
# Libraries whose multi-line messages are folded into one line in the text format.
FOLDED_LOGGERS = ("libp2p", "multiaddr", "async_service", "trio", "eth", "trie")
QUIET_LOGGERS = ("libp2p", "multiaddr", "eth", "trie", "async_service")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` in UTC; a record never prints a line without its timestamp."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:
            return text
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        if record.name.split(".", 1)[0] in FOLDED_LOGGERS:
            return " | ".join(line.strip() for line in lines)
        return "\n".join([lines[0], *("    " + line for line in lines[1:])])


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _adopt_libp2p_logger()


def _adopt_libp2p_logger() -> None:
    """Route py-libp2p's records through the root handler (see the module docstring).

    Importing libp2p first runs its own set-up now rather than later, when it would
    detach the logger again. With ``LIBP2P_DEBUG`` set, its own debug handlers stay."""
    if os.environ.get("LIBP2P_DEBUG"):
        return
    try:
        import libp2p  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of the node
        return
    logger = logging.getLogger("libp2p")
    logger.handlers.clear()
    logger.propagate = True
    # Some of its modules pin their own level (libp2p.network.auto_connector: INFO, a
    # state line a second while dialling): let them follow the libp2p logger's.
    try:
        import libp2p.network.auto_connector  # noqa: F401  (sets the level on import)
    except ImportError:  # pragma: no cover - another py-libp2p version
        pass
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("libp2p."):
            logging.getLogger(name).setLevel(logging.NOTSET)
