"""The typed errors of the bounded decoders, each with a stable ``code``."""

from __future__ import annotations

from rlp.exceptions import DecodingError


class DecodeError(Exception):
    """Input refused by a bounded decoder. ``code`` is stable (see docs/encoding.md);
    the message says what was wrong and which limit applied."""

    code = "malformed"

    def __init__(self, code: str, message: str) -> None:
        Exception.__init__(self, message)  # not super(): pyrlp's DecodingError wants (message, rlp)
        self.code = code


class RLPDecodeError(DecodeError, DecodingError):
    """Bytes that are not RLP of the expected shape: ``rlp_malformed`` (not strict,
    canonical RLP), ``rlp_too_deep``, ``rlp_too_many_items``, ``rlp_too_large``,
    ``rlp_bad_shape`` (valid RLP that the format's sedes refuses).

    It is also a :class:`rlp.exceptions.DecodingError`, so code that catches pyrlp's
    errors catches this one too."""

    def __init__(self, code: str, message: str) -> None:
        DecodeError.__init__(self, code, message)
        self.rlp = None


class JSONParseError(DecodeError, ValueError):
    """Text that is not a JSON document within limits: ``json_malformed``,
    ``json_too_deep``, ``json_too_large``. A ValueError, like :class:`json.JSONDecodeError`."""
