"""Node configuration: TOML under ``<home>/config.toml``, every key with a documented
default (docs/config.md). Unknown keys are refused so typos do not pass silently."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

JOURNAL_MIN_BYTES = 256 * 1024  # holds a largest (128 KiB) transaction, with room


class ConfigError(Exception):
    code = "bad_config"


@dataclass
class NodeSection:
    moniker: str = "motus-node"
    log_level: str = "info"
    log_format: str = "text"  # "text" or "json"


@dataclass
class RPCSection:
    host: str = "127.0.0.1"  # never 0.0.0.0 by default: RPC is local unless the operator says so
    port: int = 8545
    max_request_bytes: int = 5 * 1024 * 1024
    max_batch: int = 100
    max_connections: int = 256
    # Per remote address, so that one client cannot take every connection; loopback
    # clients (every local tool, test and the devnet) all share 127.0.0.1 (docs/rpc.md).
    max_connections_per_client: int = 64
    max_subscriptions_per_client: int = 1000  # over all of an address's WebSocket sessions
    idle_timeout_seconds: int = 30  # HTTP keep-alive idle, and the budget for a request's headers
    request_timeout_seconds: int = 10  # an HTTP body or a WebSocket message, once begun
    ws_ping_interval_seconds: int = 20  # the server pings every WebSocket session this often
    ws_idle_timeout_seconds: int = 60  # no frame from the client (a pong counts): closed
    rate_limit_per_second: int = 500  # requests per client address; 0 disables
    max_log_blocks: int = 10_000  # eth_getLogs block range bound
    max_log_results: int = 10_000
    # Polled filters (eth_newFilter & co., docs/rpc.md "Filters")
    filter_timeout_seconds: int = 300  # an unpolled filter is dropped after this long (geth's 5 min)
    max_filters: int = 1000  # installed filters on the node, all clients together
    max_filters_per_client: int = 500
    max_filter_changes: int = 5000  # changes held per filter between polls; beyond: oldest dropped
    # debug_trace* (docs/rpc.md "Tracing"): a trace still running after this long is refused
    trace_timeout_seconds: int = 25  # under web3.py's 30 s default client timeout
    # debug_trace* re-execute EVM code for seconds of CPU each: a node whose RPC is open
    # beyond the machine may switch them off (they then answer "method not found")
    debug_api: bool = True
    # the web explorer's pages on GET / (docs/explorer.md); false: GET / answers 405 again
    explorer: bool = True
    # results of head-dependent reads kept until the next block (node/rpc/answercache.py); 0: off
    answer_cache_bytes: int = 8 * 1024 * 1024
    # while the machine is short of CPU, RPC uses at most this % of a core (node/rpc/loopguard.py)
    cpu_share_percent: int = 50


@dataclass
class P2PSection:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 30333
    bootstrap: list[str] = field(default_factory=list)
    # Peer exchange (/motus/peers/1, docs/p2p.md): peers learnt from peers are dialled
    # while fewer than target_peers are connected; inbound ones beyond max_peers are closed.
    target_peers: int = 8
    max_peers: int = 32
    # Proposals go on the consensus topic with their attestations named by id, each
    # validator rebuilding the block from its own pool (docs/network.md, "Compact
    # proposals"); false sends whole blocks (every node reads both).
    compact_proposals: bool = True


@dataclass
class ConsensusSection:
    timeout_propose_ms: int = 1000
    timeout_prevote_ms: int = 500
    timeout_precommit_ms: int = 500
    timeout_delta_ms: int = 500  # added per round to each timeout
    commit_wait_ms: int = 200
    block_interval_ms: int = 1000  # minimum time between blocks
    # CPU time a proposal may take to build, in percent of timeout_propose_ms: every
    # validator executes it again within its own propose timeout (docs/consensus.md
    # "Proposal budget").
    proposal_budget_pct: int = 30


@dataclass
class MempoolSection:
    max_per_sender: int = 64
    max_total: int = 10_000
    # A transaction waiting behind a nonce gap is dropped after this long (docs/rpc.md,
    # "Transaction pool").
    queued_lifetime_seconds: int = 180
    # Transactions from this node's RPC clients are journaled (<home>/txpool/journal) and
    # pooled again at start (docs/storage.md "Transaction journal").
    journal: bool = True
    journal_max_bytes: int = 16 * 1024 * 1024


@dataclass
class TelemetrySection:
    signal_retention_days: int = 30
    pool_max: int = 100_000
    # processes for attestation signature checks (0: one thread beside the event loop,
    # which crawls while the loop runs Python: every recovery gives the GIL up and waits
    # for it back, docs/telemetry.md "Node wiring")
    verify_workers: int = 1


@dataclass
class WebhooksSection:
    """Webhook delivery (docs/developers.md, "Webhooks")."""

    # where a node may POST: IP networks ("127.0.0.1", "10.0.0.0/8") and host names;
    # empty (the default): no webhook can be registered, so a node is never made to
    # reach into the network it runs in (SSRF)
    allowed_targets: list[str] = field(default_factory=list)
    max_webhooks: int = 1_000  # on this node, all owners together
    max_per_owner: int = 50
    timeout_seconds: int = 5  # one POST: connect, send, status line
    retry_initial_ms: int = 1_000  # first retry after this; doubling
    retry_max_ms: int = 300_000  # at most this between retries
    # PEM file of CA certificates trusted for https targets besides the system's (a
    # private CA of the operator's receivers); a relative path is under the node's home
    ca_file: str = ""


@dataclass
class HealthSection:
    # What ``GET /health`` calls unhealthy (node/health.py, docs/rpc.md "Health").
    max_head_age_seconds: int = 10  # head older than this: "stalled" (about 10 block intervals)
    max_sync_lag_blocks: int = 10  # further behind than this while syncing: "syncing"


@dataclass
class StorageSection:
    # docs/storage.md, "Pruning": "pruned" keeps the states of the last keep_states blocks
    # (blocks, receipts and indexes are always kept whole); "archive" keeps every state.
    mode: str = "pruned"
    keep_states: int = 128  # geth's number: about two minutes of blocks at one a second
    # A sweep starts once the trie written since the last one reaches sweep_growth_percent
    # of the live state, and at least sweep_min_bytes (0: after every block, for tests).
    sweep_min_bytes: int = 64 * 1024 * 1024
    sweep_growth_percent: int = 50
    # LevelDB's block cache (uncompressed 4 KiB blocks of the store's most recent reads).
    # A validator of a large fleet reads every vehicle's slots every few dozen blocks:
    # sized to hold them, the reads stop decoding blocks (docs/storage.md, "Caches").
    block_cache_mb: int = 256
    # LevelDB's memtable (and its log): a block rewrites the same flat entries and
    # records (every device's slots, the accounts) block after block; a larger memtable
    # keeps only their last value when it is written out, so the background compaction
    # rewrites far less (docs/storage.md, "Caches"). Up to twice this in memory while one
    # is written out; a restart replays at most this much log.
    write_buffer_mb: int = 64


STORAGE_MODES = ("pruned", "archive")


@dataclass
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    rpc: RPCSection = field(default_factory=RPCSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)
    health: HealthSection = field(default_factory=HealthSection)
    webhooks: WebhooksSection = field(default_factory=WebhooksSection)
    storage: StorageSection = field(default_factory=StorageSection)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Config:
        cfg = cls()
        for section_name, values in doc.items():
            section = getattr(cfg, section_name, None)
            if section is None or not isinstance(values, dict):
                raise ConfigError(f"unknown config section [{section_name}]")
            known = {f.name: f for f in fields(section)}
            for key, value in values.items():
                if key not in known:
                    raise ConfigError(f"unknown config key {section_name}.{key}")
                default = getattr(section, key)
                if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, int) and not isinstance(value, int)
                ):
                    raise ConfigError(f"{section_name}.{key} must be {type(default).__name__}")
                setattr(section, key, value)
        _check_rpc(cfg.rpc)
        for key in ("max_head_age_seconds", "max_sync_lag_blocks"):
            if getattr(cfg.health, key) < 1:  # 0 would call every node unhealthy
                raise ConfigError(f"health.{key} must be at least 1")
        for key in ("max_per_sender", "max_total", "queued_lifetime_seconds"):
            if getattr(cfg.mempool, key) < 1:  # 0 would refuse or drop every transaction
                raise ConfigError(f"mempool.{key} must be at least 1")
        for key in ("max_webhooks", "max_per_owner", "timeout_seconds", "retry_initial_ms",
                    "retry_max_ms"):
            if getattr(cfg.webhooks, key) < 1:
                raise ConfigError(f"webhooks.{key} must be at least 1")
        if not isinstance(cfg.webhooks.allowed_targets, list) or not all(
                isinstance(t, str) for t in cfg.webhooks.allowed_targets):
            raise ConfigError("webhooks.allowed_targets must be a list of strings")
        if not isinstance(cfg.webhooks.ca_file, str):
            raise ConfigError("webhooks.ca_file must be a string (a PEM file's path)")
        if not 1 <= cfg.consensus.proposal_budget_pct <= 100:  # 0 builds empty blocks only
            raise ConfigError("consensus.proposal_budget_pct must be between 1 and 100")
        if cfg.mempool.journal_max_bytes < JOURNAL_MIN_BYTES:
            raise ConfigError(f"mempool.journal_max_bytes must be at least {JOURNAL_MIN_BYTES} "
                              "(one largest transaction)")
        _check_storage(cfg.storage)
        return cfg

    def to_toml(self) -> str:
        lines = ["# Motus node configuration. Every key and its default: docs/config.md", ""]
        for name, values in asdict(self).items():
            lines.append(f"[{name}]")
            for key, value in values.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


_RPC_POSITIVE = (
    "max_connections",
    "max_connections_per_client",
    "max_subscriptions_per_client",
    "idle_timeout_seconds",
    "request_timeout_seconds",
    "ws_ping_interval_seconds",
    "ws_idle_timeout_seconds",
    "filter_timeout_seconds",
    "max_filters",
    "max_filters_per_client",
    "max_filter_changes",
    "trace_timeout_seconds",
)


def _check_rpc(rpc: RPCSection) -> None:
    """Refuse RPC limits that would switch a protection off or make it refuse everyone."""
    for key in _RPC_POSITIVE:
        if getattr(rpc, key) < 1:
            raise ConfigError(f"rpc.{key} must be at least 1")
    if not 5 <= rpc.cpu_share_percent <= 100:
        raise ConfigError("rpc.cpu_share_percent must be between 5 and 100 (100: never capped)")
    if rpc.answer_cache_bytes < 0:
        raise ConfigError("rpc.answer_cache_bytes must be 0 (off) or more")
    if rpc.ws_idle_timeout_seconds <= rpc.ws_ping_interval_seconds:
        # a client that answers every ping must never look idle
        raise ConfigError("rpc.ws_idle_timeout_seconds must exceed rpc.ws_ping_interval_seconds")


def _check_storage(storage: StorageSection) -> None:
    if storage.mode not in STORAGE_MODES:
        raise ConfigError(f"storage.mode must be one of {', '.join(STORAGE_MODES)}")
    if storage.keep_states < 1:  # the head's state is what the node runs on
        raise ConfigError("storage.keep_states must be at least 1")
    if storage.sweep_min_bytes < 0:
        raise ConfigError("storage.sweep_min_bytes must be at least 0")
    if storage.sweep_growth_percent < 1:
        raise ConfigError("storage.sweep_growth_percent must be at least 1")
    if not 8 <= storage.block_cache_mb <= 65_536:
        raise ConfigError("storage.block_cache_mb must be between 8 and 65536")
    if not 1 <= storage.write_buffer_mb <= 1024:
        raise ConfigError("storage.write_buffer_mb must be between 1 and 1024")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))
