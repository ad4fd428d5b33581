"""Tendermint-style BFT consensus.

Owns: validator sets and proposer choice, votes, proposals, commits, evidence,
the consensus state machine and the signing guard (WAL).

Must not import: ``vm``, ``p2p``, ``node`` (it may import the leaf ``codec``, whose
bounded RLP decoder it decodes every message with). The application is reached only
through the small interface in :mod:`consensus.app` (propose, validate, commit),
so the machine can be driven by a deterministic simulated network in tests.
"""
