"""Gossip topic names, versions and size limits.

A topic is ``/motus/<chain_id>/<name>/<version>``: the chain id keeps two
networks that share peers from mixing messages, and the trailing version lets a
topic's encoding change without confusing old nodes (they simply do not share
the new topic). Every topic is at version 1 except ``tx``: version 2 carries a
batch of transactions per message instead of one (docs/decisions.md).

Size limits are checked on every received message before its signature is
checked or the node's validator runs; a message over the limit is rejected and
its forwarder banned (no honest node publishes one). So are per-peer budgets
(messages and bytes per second, ``p2p.budget``).
"""

from __future__ import annotations

import re
from enum import StrEnum

from p2p.errors import ConfigError

KIB = 1024
MIB = 1024 * KIB


class TopicName(StrEnum):
    """The topics every Motus node speaks."""

    TX = "tx"
    ATTESTATION = "attestation"
    CONSENSUS = "consensus"
    BLOCK = "block"
    SIGNALS = "signals"


# Topics whose encoding changed since the first release; the rest are at 1.
TOPIC_VERSIONS: dict[str, int] = {
    TopicName.TX: 2,  # was one raw transaction per message; now a batch (p2p.batch)
}

# A transaction batch (see p2p.batch): closes at 64 KiB, but one transaction may
# be 128 KiB (go-ethereum's txMaxSize) and then travels alone.
# An attestation batch (see p2p.batch): up to 64 KiB normally, 1 MiB with slack
# for gateways that batch more aggressively.
# A consensus message: a vote is ~200 B but a proposal carries the whole block.
# A block announcement: header hash and height only; bodies go by /motus/blocks/1.
DEFAULT_MAX_MESSAGE_SIZE: dict[str, int] = {
    TopicName.TX: 256 * KIB,
    TopicName.ATTESTATION: 1 * MIB,
    TopicName.CONSENSUS: 2 * MIB,
    TopicName.BLOCK: 4 * KIB,
    TopicName.SIGNALS: 512 * KIB,
}

# Per-peer budgets (p2p.budget): messages and bytes per second one peer may make
# us check on a topic, 4 s deep, counting first deliveries only. Sized from the
# topic's honest traffic and from what a message costs to check (measured on a
# 2-core machine: a consensus message IGNOREd after decoding costs a node about
# 0.4 ms with pubsub's signature check, so 250/s is ~10 % of a core):
# consensus: a 4-validator devnet sends 10-30 messages/s, proposals up to 2 MiB;
# tx: at the chain's ~600 tx/s ceiling, ~66 KB/s in at most ~20 batches/s per node;
# attestation: each item (~160 B) costs a signature recovery (~60 us), so bytes are
# the bound: 1 MiB/s is ~6,500 attestations/s, a third of what a node admits;
# block: every node that commits a block announces it (~40 bytes);
# signals: off-chain payloads (up to 64 KiB, typically ~200 B) with their attestation,
# in batches of up to 256 KiB; each item costs a signature recovery and a keccak of the
# payload, so 2 MiB/s is ~10,000 typical payloads/s.
# A bigger network (more validators, more relays) raises these in register_topic.
DEFAULT_BUDGETS: dict[str, tuple[float, float]] = {  # (messages/s, bytes/s)
    TopicName.TX: (200, 1 * MIB),
    TopicName.ATTESTATION: (100, 1 * MIB),
    TopicName.CONSENSUS: (250, 8 * MIB),
    TopicName.BLOCK: (200, 256 * KIB),
    TopicName.SIGNALS: (50, 2 * MIB),
}
# A topic without an entry: this many messages per second, and this many times its
# size limit in bytes per second.
DEFAULT_BUDGET_MESSAGES = 100.0
DEFAULT_BUDGET_SIZES = 4.0

# The largest message any topic may carry; pubsub's RPC frame limits are
# derived from it (see p2p.tuning).
MAX_TOPIC_MESSAGE_SIZE = 2 * MIB

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def topic_id(chain_id: int, name: str) -> str:
    """Return the gossipsub topic string for ``name`` on chain ``chain_id``."""
    if not is_valid_topic_name(name):
        raise ConfigError(f"topic name {name!r} must match {_NAME_RE.pattern}")
    if chain_id < 0:
        raise ConfigError(f"chain id must be non-negative, got {chain_id}")
    return f"/motus/{chain_id}/{name}/{TOPIC_VERSIONS.get(name, 1)}"


def is_valid_topic_name(name: str) -> bool:
    """True when ``name`` can be the ``<name>`` part of a topic id."""
    return bool(_NAME_RE.match(name))
