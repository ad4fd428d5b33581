"""The layout of a node's home directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tx_journal(self) -> Path:
        return self.root / "txpool" / "journal"

    @property
    def signals(self) -> Path:
        return self.root / "signals"

    @property
    def validator_key(self) -> Path:
        return self.root / "keys" / "validator.json"

    @property
    def node_key(self) -> Path:
        return self.root / "keys" / "node.key"

    @property
    def keystore(self) -> Path:
        return self.root / "keystore"

    @property
    def signing_state(self) -> Path:
        return self.root / "consensus" / "signing_state.json"

    @property
    def consensus_wal(self) -> Path:
        """The consensus message log of the current height (consensus.wal.MessageLog)."""
        return self.root / "consensus" / "wal"
