"""Bounded decoders of untrusted bytes.

Owns: the RLP decoder that every Motus format goes through (:mod:`codec.rlp`: iterative,
no recursion, bounded nesting depth and item count, one typed error), the shape check of
Ethereum transaction envelopes before py-evm decodes them (:mod:`codec.transaction`), and
the JSON parser for documents from clients and nodes (:mod:`codec.json`: nesting depth
and size checked before :func:`json.loads` runs), and the checksummed record framing of
the node's append-only logs (:mod:`codec.records`: a torn tail is cut, never misread), and the durable replacement
of small state files (:mod:`codec.files`). The limits of each format are listed in
docs/encoding.md.

Must not import: ``node``, ``consensus``, ``vm``, ``p2p``, ``genesis``. It is a leaf that
``consensus``, ``vm`` and ``node`` all use, so that the two leaves ``consensus`` and ``vm``
share one decoder without importing each other.
"""

from codec.errors import DecodeError, JSONParseError, RLPDecodeError

__all__ = ["DecodeError", "JSONParseError", "RLPDecodeError"]
