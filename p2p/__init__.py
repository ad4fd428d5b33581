"""Networking over py-libp2p and trio: host, gossip topics, request/response
protocols, codecs, message validation and peer scoring.

Must not import ``node``, ``vm`` or ``consensus``: the node hands in validators
and handlers as callables, so p2p carries bytes and never decides what they mean.

Modules: ``host`` (``P2PNode``: the entry point, wiring ``gossip`` (topics,
the gate, validators, inboxes), ``peers`` (connections, bootstrap, peer exchange,
bans) and ``requests`` (request/response)), ``config`` (``P2PConfig``), ``topics``
(names, size limits), ``batch`` (attestation envelopes), ``reqresp`` (status
and block-range protocols), ``scoring`` (peer scores and bans), ``identity``
(the persistent node key), ``tuning`` (py-libp2p module-level limits),
``errors`` (typed errors with stable codes). This file imports nothing, so
``p2p.batch`` and ``p2p.errors`` stay cheap to import. See docs/p2p.md.
"""
