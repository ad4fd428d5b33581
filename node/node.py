"""Composition root: builds the node's parts in dependency order and runs them in one
trio nursery (database -> chain store -> mempool / attestation service -> application ->
RPC -> p2p (attestation topic wired to the attestation service) -> consensus)."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import trio

from consensus.crypto import address_of_private_key
from genesis.spec import GenesisSpec
from node import tokens
from node.app import Application
from node.attestations import AttestationService
from node.config import Config
from node.db import Database
from node.errors import ensure_port_free
from node.home import Home
from node.keys import load_validator_key
from node.localtxs import LocalTransactions
from node.mempool import Mempool
from node.store import ChainStore
from node.webhooks import WebhookService, tls_context
from p2p.identity import load_or_create_node_key, peer_id_of
from p2p.topics import TopicName
from vm.modules.params import get_param
from vm.state import warm_system_storage

log = logging.getLogger("motus.node")


class Node:
    def __init__(self, home: str | Path, config: Config | None = None) -> None:
        self.home = Home(Path(home))
        self.config = config or Config.load(self.home.config)
        self.genesis = GenesisSpec.load(self.home.genesis)
        storage = self.config.storage
        self.database = Database(self.home.data, block_cache_bytes=storage.block_cache_mb * 2**20,
                                 write_buffer_bytes=storage.write_buffer_mb * 2**20)
        self.store = ChainStore(self.database)
        self.store.init_genesis(self.genesis)
        self.chain_id = self.genesis.chain_id
        head_state_params = self._head_params()
        self.mempool = Mempool(
            self.chain_id, max_per_sender=self.config.mempool.max_per_sender,
            max_total=self.config.mempool.max_total,
            block_gas_limit=head_state_params["block_gas_limit"],
            min_fee=head_state_params["min_base_fee_per_gas"],
            queued_lifetime_s=self.config.mempool.queued_lifetime_seconds,
        )
        self.attestations = AttestationService(self.store, self.chain_id, self.config.telemetry,
                                               self.home.signals)
        self.app = Application(self.store, self.mempool, attestation_pool=self.attestations,
                               signature_worker=self.attestations.block_signatures)
        # the first blocks' storage writes then find the upper trie levels decoded
        started = time.monotonic()
        warmed = warm_system_storage(self.app.head_state())
        log.info("decoded %d upper storage trie nodes of the system modules in %.2f s",
                 warmed, time.monotonic() - started)
        # developers' webhooks on signals (node/webhooks.py), kept in the home
        ca_file = self.config.webhooks.ca_file
        self.webhooks = WebhookService(
            self.home.root / "webhooks", self.config.webhooks, self.app.head_state,
            lambda: get_param(self.app.head_state(), "h3_resolution"),
            tls_context(self.home.root / ca_file if ca_file else None))
        mp = self.config.mempool
        self.local_txs = LocalTransactions(
            self.mempool, self.home.tx_journal if mp.journal else None,
            journal_max_bytes=mp.journal_max_bytes)
        self.validator_key: bytes | None = None
        if self.home.validator_key.exists():
            self.validator_key = load_validator_key(self.home.validator_key)
        self.address = address_of_private_key(self.validator_key) if self.validator_key else None
        # the node id telemetry requests name as their audience (docs/telemetry.md)
        self.peer_id = peer_id_of(load_or_create_node_key(self.home.node_key))
        # access tokens (developer licenses) are one more credential of node/access.py
        tokens.install()
        self.token_requests = tokens.TokenRequests()  # motus_issueToken: each request answered once
        self.rpc_port: int | None = None
        self.stopping = trio.Event()
        self.network = None
        self.pruner = None
        st = self.config.storage
        if st.mode == "pruned":
            from node.prune import Pruner

            self.pruner = Pruner(self.store, st.keep_states, sweep_min_bytes=st.sweep_min_bytes,
                                 sweep_growth_percent=st.sweep_growth_percent)

    def _head_params(self) -> dict[str, int]:
        from vm.db import OverlayDB
        from vm.state import BlockEnv, make_state

        h = self.store.head
        state = make_state(OverlayDB(self.store.state_db), h.state_root,
                           BlockEnv(h.chain_id, h.height, h.timestamp_ms, h.proposer, h.gas_limit,
                                    h.base_fee_per_gas, h.parent_hash))
        return {n: get_param(state, n) for n in ("block_gas_limit", "min_base_fee_per_gas")}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from node.logindex import build_in_background
        from node.network import NetworkService
        from node.observer import BlockObserver
        from node.rpc.server import serve_rpc

        log.info("starting %s chain %d at height %d", self.config.node.moniker, self.chain_id, self.store.head_height)
        try:
            if self.pruner is not None:
                self.pruner.start()
            # Before the RPC opens: the journal's transactions are pending again, and
            # every RPC accept is journaled (and queued for gossip) before its answer.
            self.local_txs.replay(lambda raw: self.app.submit_transaction(raw, gossip=False))
            self.app.tx_listeners.append(self.local_txs.accepted)
            # The per-block log line and metrics are the node's, with or without RPC.
            self.app.commit_listeners.append(BlockObserver(self).on_commit)
            self.app.commit_listeners.append(self.webhooks.on_commit)
            self.attestations.signal_listeners.append(self.webhooks.on_signals)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                await nursery.start(self.webhooks.run)
                self.rpc_port = await nursery.start(serve_rpc, self)
                self.network = NetworkService(self)
                attestation_inbox = self.attestations.attach_gossip(self.network.p2p)
                await nursery.start(self.attestations.run, attestation_inbox)
                p2p = self.network.p2p
                if p2p is not None:
                    # Gossip is up when the tx topic has a mesh, long before the initial
                    # sync ends: what the RPC accepts meanwhile is published then.
                    self.local_txs.attach(p2p.transactions.add,
                                          lambda: p2p.mesh_peers(TopicName.TX))
                nursery.start_soon(self.local_txs.run)
                nursery.start_soon(build_in_background, self.store)  # a pre-index database
                await nursery.start(self.network.run)
                task_status.started()
                await self.stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.local_txs.close()
            self.webhooks.close()
            self.attestations.close()
            if self.pruner is not None:
                self.pruner.stop()  # before the database closes under its snapshot
            self.database.close()
            log.info("stopped at height %d", self._safe_head())

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

