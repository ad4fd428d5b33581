"""Typed errors of the p2p package.

Every error carries a stable ``code`` (a short snake_case string) that logs,
metrics and RPC answers can rely on; the message is for people. Codes never
change meaning once released: add a new class instead.
"""

from __future__ import annotations

from typing import ClassVar


class P2PError(Exception):
    """Base of every error raised by ``p2p``; ``code`` is stable."""

    code: ClassVar[str] = "p2p_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class ConfigError(P2PError):
    """A configuration value (address, topic name, limit) is unusable."""

    code = "bad_config"


class KeyFileError(P2PError):
    """The node key file cannot be read, written or parsed."""

    code = "key_file"


class NotRunning(P2PError):
    """The operation needs ``P2PNode.run`` to be active."""

    code = "not_running"


class UnknownTopic(P2PError):
    """The topic was never registered with ``register_topic``."""

    code = "unknown_topic"


class MessageTooLarge(P2PError):
    """A message exceeds the size limit of its topic or protocol."""

    code = "too_large"


class BatchDecodeError(P2PError):
    """A batch envelope is not a canonical msgpack array of bin within limits."""

    code = "malformed_batch"


class RequestError(P2PError):
    """Base of request/response failures seen by the requesting side."""

    code = "request_failed"


class RequestTimeout(RequestError):
    """The peer did not answer within the request timeout."""

    code = "timeout"


class PeerUnreachable(RequestError):
    """No stream could be opened to the peer (not connected, dial failed, reset)."""

    code = "unreachable"


class PeerBanned(RequestError):
    """The peer is banned locally for misbehaviour; no request is sent."""

    code = "peer_banned"


class BadRequest(RequestError):
    """The request is invalid before it is sent (e.g. start height above end)."""

    code = "bad_request"


class BadResponse(RequestError):
    """The peer's answer is malformed or breaks the protocol's bounds."""

    code = "bad_response"


class WrongChain(RequestError):
    """The peer reports a different chain id."""

    code = "wrong_chain"


class RemoteError(RequestError):
    """The peer answered with an error; ``remote_code`` is its code."""

    code = "remote_error"

    def __init__(self, remote_code: str, message: str) -> None:
        super().__init__(f"peer answered {remote_code}: {message}")
        self.remote_code = remote_code
