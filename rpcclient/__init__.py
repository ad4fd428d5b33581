"""A small synchronous JSON-RPC client for the CLI, the light client, the devnet's fleet
and scripts (standard library and the bounded JSON parser of :mod:`codec.json` only).

May import ``codec`` only: the light client uses it, and must not reach the daemon
through it."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from typing import Any

from codec.json import JSONParseError, parse_json

_ids = itertools.count(1)
# The largest answer read from a node: a full block with its transactions and receipts is
# a few MiB; anything past this is refused rather than buffered (a lying node must not
# exhaust the client's memory).
MAX_ANSWER_BYTES = 32 * 1024 * 1024


class RPCError(Exception):
    """An error answer from the node (``code``, ``message``, ``data`` as sent), or, with
    ``code`` None, a failure to get any answer (node down, timeout, not JSON-RPC)."""

    def __init__(self, code: int | None, message: str, data: Any = None) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


def rpc_call(
    url: str, method: str, params: list[Any] | dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Call ``method`` on the node at ``url``; returns the result or raises RPCError."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": next(_ids),
            "method": method,
            "params": [] if params is None else params,
        }
    ).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:  # 413, 429, 503 carry a JSON-RPC error body
        raw = exc.read(MAX_ANSWER_BYTES + 1)
        if not raw:
            raise RPCError(None, f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RPCError(None, f"cannot reach node at {url}: {reason}: is the node running "
                             f"(motus node start), and is this its RPC URL (--rpc)?") from None
    return read_answer(raw, url)


def read_answer(raw: bytes, url: str) -> Any:
    """The result of the JSON-RPC answer ``raw`` from the node at ``url``; raises only
    RPCError: the node's error answer (its code), or code None for an answer that is
    too large, not JSON within limits (codec.json), or not a JSON-RPC answer."""
    if len(raw) > MAX_ANSWER_BYTES:
        raise RPCError(None, f"answer from {url} exceeds {MAX_ANSWER_BYTES} bytes")
    try:
        doc = parse_json(raw, max_bytes=None)  # size checked above; depth by codec.json
    except JSONParseError as exc:
        detail = "" if exc.code == "json_malformed" else f" ({exc})"
        raise RPCError(None, f"not a JSON-RPC answer from {url}{detail}") from None
    if not isinstance(doc, dict):
        raise RPCError(None, f"unexpected answer from {url}")
    if "error" in doc:
        err = doc["error"]
        if not isinstance(err, dict):
            raise RPCError(None, f"malformed error answer from {url}: {err!r:.200}")
        code = err.get("code")
        raise RPCError(code if isinstance(code, int) and not isinstance(code, bool) else None,
                       str(err.get("message", "error")), err.get("data"))
    return doc.get("result")
