"""The node's log: every record has a timestamp, py-libp2p's included, and a library's
multi-line message or traceback is one line (node/logs.py)."""

from __future__ import annotations

import io
import logging
import re

import pytest

from node.logs import setup_logging

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO |WARNING|ERROR|CRITICAL) ")


@pytest.fixture
def log_stream():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


def test_libp2p_multiline_message_and_traceback_are_one_stamped_line(log_stream) -> None:
    import libp2p  # noqa: F401  (its import detaches the logger: must not undo ours)

    logger = logging.getLogger("libp2p.pubsub.gossipsub")
    logger.warning("stream closed\nwhile reading\n  from peer QmX")
    try:
        raise ValueError("bad frame")
    except ValueError:
        logger.exception("handler failed")
    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all(STAMP.match(line) for line in lines), lines
    assert "stream closed | while reading | from peer QmX" in lines[0]
    assert "handler failed | Traceback" in lines[1] and "ValueError: bad frame" in lines[1]


def test_own_traceback_is_indented_under_its_stamped_line(log_stream) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("motus.network").exception("sync failed")
    first, *rest = log_stream.getvalue().splitlines()
    assert STAMP.match(first) and first.endswith("motus.network: sync failed")
    assert rest and all(line.startswith("    ") for line in rest)
    assert rest[-1].strip() == "RuntimeError: boom"


def test_libp2p_below_warning_stays_quiet(log_stream) -> None:
    logging.getLogger("libp2p.host").info("dialled")
    # a module that pins its own level to INFO on import
    logging.getLogger("libp2p.network.auto_connector").info("AUTO_CONNECTOR_STATE: ...")
    assert log_stream.getvalue() == ""
