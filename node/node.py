"""Composition root: builds the node's parts in dependency order and runs them in one
trio nursery (database -> chain store -> mempool/pools -> application -> RPC ->
p2p -> consensus)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import trio

from consensus.crypto import address_of_private_key
from consensus.types import PRECOMMIT, Commit, Vote
from genesis.spec import GenesisSpec
from node.app import Application
from node.config import Config
from node.db import Database
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
        self.app = Application(self.store, self.mempool)
        self.validator_key: bytes | None = None
        if self.home.validator_key.exists():
            self.validator_key = load_validator_key(self.home.validator_key)
        self.address = address_of_private_key(self.validator_key) if self.validator_key else None
        self.rpc_port: int | None = None
        self.stopping = trio.Event()

    def _head_params(self) -> dict[str, int]:
        from vm.db import OverlayDB
        from vm.state import BlockEnv, make_state

        h = self.store.head
        state = make_state(OverlayDB(self.store.state_db), h.state_root,
                           BlockEnv(h.chain_id, h.height, h.timestamp_ms, h.proposer, h.gas_limit,
                                    h.base_fee_per_gas, h.parent_hash))
        return {n: get_param(state, n) for n in ("block_gas_limit", "min_base_fee_per_gas")}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from node.rpc.server import serve_rpc

        log.info("starting %s chain %d at height %d", self.config.node.moniker, self.chain_id, self.store.head_height)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                self.rpc_port = await nursery.start(serve_rpc, self)
                nursery.start_soon(self._produce_blocks)
                task_status.started()
                await self.stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
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

    async def _produce_blocks(self) -> None:
        """Single-validator block production: propose, sign our own precommit, commit."""
        vs = self.store.validators_for(self.store.head_height + 1)
        if self.validator_key is None or vs is None or len(vs) != 1 or vs.get(self.address) is None:
            log.info("not the sole validator: not producing blocks")
            return
        interval = self.config.consensus.block_interval_ms / 1000
        while True:
            started = trio.current_time()
            height = self.store.head_height + 1
            value = self.app.propose(height, self.address)
            block_hash = self.app.block_hash(value)
            vote = Vote.create(self.chain_id, self.validator_key, PRECOMMIT, height, 0, block_hash, self.address)
            commit = Commit.from_votes(height, 0, block_hash, [vote])
            block = self.app.commit(height, value, commit)
            log.debug("committed height %d with %d txs", height, len(block.transactions))
            await trio.sleep(max(0.0, interval - (trio.current_time() - started)))
