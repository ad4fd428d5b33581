"""Composition root: builds the node's parts in dependency order and runs them in one
trio nursery (database -> chain store -> mempool / attestation service -> application ->
RPC -> p2p (attestation topic wired to the attestation service) -> consensus)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import trio

from consensus.crypto import address_of_private_key
from genesis.spec import GenesisSpec
from node.app import Application
from node.attestations import AttestationService
from node.config import Config
from node.db import Database
from node.errors import ensure_port_free
from node.home import Home
from node.keys import load_validator_key
from node.mempool import Mempool
from node.store import ChainStore
from vm.modules.params import get_param

log = logging.getLogger("motus.node")

VERSION = "0.1.0"
CLIENT_VERSION = f"Motus/v{VERSION}/python"


class Node:
    def __init__(self, home: str | Path, config: Config | None = None) -> None:
        self.home = Home(Path(home))
        self.config = config or Config.load(self.home.config)
        self.genesis = GenesisSpec.load(self.home.genesis)
        self.database = Database(self.home.data)
        self.store = ChainStore(self.database)
        self.store.init_genesis(self.genesis)
        self.chain_id = self.genesis.chain_id
        head_state_params = self._head_params()
        self.mempool = Mempool(
            self.chain_id, max_per_sender=self.config.mempool.max_per_sender,
            max_total=self.config.mempool.max_total,
            block_gas_limit=head_state_params["block_gas_limit"],
            min_fee=head_state_params["min_base_fee_per_gas"],
        )
        self.attestations = AttestationService(self.store, self.chain_id, self.config.telemetry,
                                               self.home.signals)
        self.app = Application(self.store, self.mempool, attestation_pool=self.attestations)
        self.validator_key: bytes | None = None
        if self.home.validator_key.exists():
            self.validator_key = load_validator_key(self.home.validator_key)
        self.address = address_of_private_key(self.validator_key) if self.validator_key else None
        self.rpc_port: int | None = None
        self.stopping = trio.Event()
        self.network = None

    def _head_params(self) -> dict[str, int]:
        from vm.db import OverlayDB
        from vm.state import BlockEnv, make_state

        h = self.store.head
        state = make_state(OverlayDB(self.store.state_db), h.state_root,
                           BlockEnv(h.chain_id, h.height, h.timestamp_ms, h.proposer, h.gas_limit,
                                    h.base_fee_per_gas, h.parent_hash))
        return {n: get_param(state, n) for n in ("block_gas_limit", "min_base_fee_per_gas")}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from node.network import NetworkService
        from node.rpc.server import serve_rpc

        log.info("starting %s chain %d at height %d", self.config.node.moniker, self.chain_id, self.store.head_height)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                self.rpc_port = await nursery.start(serve_rpc, self)
                self.network = NetworkService(self)
                attestation_inbox = self.attestations.attach_gossip(self.network.p2p)
                await nursery.start(self.attestations.run, attestation_inbox)
                send, receive = trio.open_memory_channel[bytes](1024)
                self.app.tx_listeners.append(lambda raw: _offer(send, raw))
                await nursery.start(self.network.run)
                nursery.start_soon(self._gossip_txs, receive)
                task_status.started()
                await self.stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.attestations.close()
            self.database.close()
            log.info("stopped at height %d", self._safe_head())

    async def _gossip_txs(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        async for raw in receive:
            try:
                await self.network.publish_tx(raw)
            except Exception:
                log.exception("transaction gossip failed")

    def _safe_head(self) -> int:
        try:
            return self.store.head.height
        except Exception:
            return -1

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("shutdown requested")
                self.stopping.set()
                return


def check_ports(cfg: Config) -> None:
    """Raise PortInUse (one clear line, exit 3) when a port the node would open is taken;
    ``motus node start`` asks before it opens anything."""
    ensure_port_free(cfg.rpc.host, cfg.rpc.port, "RPC", "--rpc-port (rpc.port)")
    if cfg.p2p.enabled:
        ensure_port_free(cfg.p2p.host, cfg.p2p.port, "p2p", "--p2p-port (p2p.port)")


def _offer(send: trio.MemorySendChannel[bytes], raw: bytes) -> None:
    try:
        send.send_nowait(raw)
    except trio.WouldBlock:
        log.warning("transaction gossip queue full: dropped one (it stays in our pool)")
