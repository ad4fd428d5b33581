"""``P2PConfig``: everything a :class:`p2p.host.P2PNode` needs; the defaults suit a LAN devnet."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from p2p.batch import (
    ATTESTATION_MAX_BATCH_BYTES,
    DEFAULT_FLUSH_INTERVAL,
    TX_FLUSH_INTERVAL,
    TX_MAX_BATCH_BYTES,
)
from p2p.errors import ConfigError
from p2p.gossip import GossipConfig
from p2p.scoring import ScoreConfig

DEFAULT_P2P_PORT = 30333


@dataclass(frozen=True)
class P2PConfig:
    """Everything ``P2PNode`` needs; the defaults suit a LAN devnet."""

    key_path: Path
    chain_id: int
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_P2P_PORT  # 0 lets the OS choose (tests)
    # Full multiaddrs /ip4/HOST/tcp/PORT/p2p/PEER_ID. Our own id is skipped, so
    # every validator can share one list.
    bootstrap: tuple[str, ...] = ()
    gossip: GossipConfig = field(default_factory=GossipConfig)
    scoring: ScoreConfig = field(default_factory=ScoreConfig)
    inbox_size: int = 4096  # messages per topic waiting for the node
    request_timeout: float = 10.0
    dial_timeout: float = 5.0
    reconnect_min_backoff: float = 0.5
    reconnect_max_backoff: float = 30.0
    max_inbound_requests_per_peer: int = 8
    attestation_flush_interval: float = DEFAULT_FLUSH_INTERVAL
    attestation_max_batch_bytes: int = ATTESTATION_MAX_BATCH_BYTES
    tx_flush_interval: float = TX_FLUSH_INTERVAL
    tx_max_batch_bytes: int = TX_MAX_BATCH_BYTES
    # Peer exchange (/motus/peers/1): dial peers learnt from peers while
    # connected to fewer than target_peers (0: dial only bootstrap peers);
    # inbound connections beyond max_peers are closed (bootstrap peers stay).
    target_peers: int = 8
    max_peers: int = 32
    peer_exchange_interval: float = 30.0  # seconds between asks of a random peer

    def __post_init__(self) -> None:
        if self.chain_id < 0:
            raise ConfigError("chain_id must be non-negative")
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen_port {self.listen_port} is not a TCP port")
        if self.inbox_size < 1:
            raise ConfigError("inbox_size must be at least 1")
        if not 0 < self.reconnect_min_backoff <= self.reconnect_max_backoff:
            raise ConfigError("need 0 < reconnect_min_backoff <= reconnect_max_backoff")
        if self.request_timeout <= 0 or self.dial_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if not 0 <= self.target_peers <= self.max_peers or self.max_peers < 1:
            raise ConfigError("need 0 <= target_peers <= max_peers and max_peers >= 1")
        if self.peer_exchange_interval <= 0:
            raise ConfigError("peer_exchange_interval must be positive")
        gossip = self.gossip
        if not 0 < gossip.degree_low <= gossip.degree <= gossip.degree_high:
            raise ConfigError("need 0 < degree_low <= degree <= degree_high")
        if gossip.heartbeat_interval < 1:
            raise ConfigError("heartbeat_interval must be at least 1 s (the library takes an int)")
