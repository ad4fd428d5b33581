"""Networking over py-libp2p and trio: host, gossip topics, request/response
protocols, codecs, message validation and peer scoring.

Must not import ``node``, ``vm`` or ``consensus``: the node hands in validators
and handlers as callables, so p2p carries bytes and never decides what they mean.
"""
