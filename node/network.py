"""The node's network side: consensus driven over libp2p gossip, block sync, and the
gossip of transactions, attestations and evidence.

Wiring (CometBFT's reactors, in one trio nursery):
  consensus topic -> ConsensusRunner.submit;  runner broadcast -> consensus topic
  runner decide   -> Application.commit -> block announcement on the block topic
  tx topic        -> Mempool (validated before relay);  RPC tx -> tx topic
  evidence topic  -> Application.add_evidence (verified before relay)
  status/blocks request-response -> block sync of a node that is behind
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import rlp
import trio
from eth_hash.auto import keccak

from consensus.errors import ConsensusError
from consensus.machine import ConsensusMachine, Timeouts
from consensus.runner import ConsensusRunner
from consensus.types import Commit, DuplicateVoteEvidence
from consensus.wal import Signer, SigningGuard
from node.app import Application
from node.block import Block, MalformedBlock
from node.mempool import TxRejected

log = logging.getLogger("motus.network")

SYNC_BATCH = 64
SYNC_INTERVAL_S = 1.0
ANNOUNCE_SEDES = rlp.sedes.List([rlp.sedes.big_endian_int, rlp.sedes.Binary.fixed_length(32)])
SYNC_ITEM_SEDES = rlp.sedes.List([rlp.sedes.binary, rlp.sedes.binary])


class ConsensusApp:
    """The application as the consensus machine sees it (consensus.app.Application).

    Heights at or below our head were committed already (by block sync, possibly while
    the machine was still on that height): for them the committed block is the only
    valid value, so a lagging machine can still finish the height harmlessly."""

    def __init__(self, app: Application, proposer: bytes | None) -> None:
        self.app = app
        self.proposer = proposer

    def propose(self, height: int, round_: int) -> bytes:
        if height <= self.app.head.height:
            raw = self.app.store.raw_block(height)
            assert raw is not None
            return raw
        assert self.proposer is not None
        return self.app.propose(height, self.proposer)

    def block_hash(self, value: bytes) -> bytes:
        try:
            return Block.decode(value).hash
        except MalformedBlock:
            return keccak(b"malformed block:" + value[:64])  # matches no honest proposal

    def validate(self, height: int, value: bytes) -> bool:
        if height <= self.app.head.height:
            return value == self.app.store.raw_block(height)
        return self.app.validate(height, value)


class NetworkService:
    """Owns the P2P node, the consensus runner and block sync for one node."""

    def __init__(self, node) -> None:
        from p2p.host import P2PConfig, P2PNode

        self.node = node
        self.app: Application = node.app
        self.store = node.store
        self.chain_id = node.chain_id
        cfg = node.config
        self.p2p: P2PNode | None = None
        if cfg.p2p.enabled:
            self.p2p = P2PNode(P2PConfig(
                key_path=node.home.node_key, chain_id=self.chain_id, listen_host=cfg.p2p.host,
                listen_port=cfg.p2p.port, bootstrap=tuple(cfg.p2p.bootstrap),
            ))
            self._consensus_inbox = self.p2p.register_topic("consensus", self._check_consensus)
            self._tx_inbox = self.p2p.register_topic("tx", self._check_tx)
            self._evidence_inbox = self.p2p.register_topic("evidence", self._check_evidence,
                                                           max_size=64 * 1024)
            self._block_inbox = self.p2p.register_topic("block", self._check_announce)
            self.p2p.set_status_handler(self._serve_status)
            self.p2p.set_blocks_handler(self._serve_blocks)
        signer = None
        if node.validator_key is not None:
            node.home.signing_state.parent.mkdir(mode=0o700, exist_ok=True)
            guard = SigningGuard(node.home.signing_state)
            signer = Signer(node.validator_key, self.chain_id, guard)
        c = cfg.consensus
        delta = c.timeout_delta_ms / 1000
        timeouts = Timeouts(propose=c.timeout_propose_ms / 1000, prevote=c.timeout_prevote_ms / 1000,
                            precommit=c.timeout_precommit_ms / 1000, propose_delta=delta,
                            prevote_delta=delta, precommit_delta=delta)
        self.machine = ConsensusMachine(self.chain_id, ConsensusApp(self.app, node.address), signer, timeouts)
        height = self.store.head_height + 1
        self.runner = ConsensusRunner(
            self.machine, height, self.store.validators_for(height),
            broadcast=self._broadcast, on_decide=self._on_decide, next_validators=self._validators_for,
            on_evidence=self._on_evidence, on_invalid=self._on_invalid,
            commit_wait_s=max(c.commit_wait_ms, c.block_interval_ms) / 1000,
        )
        self._sync_wanted = trio.Event()
        self.syncing = False
        self.tx_listeners: list[Callable[[bytes], None]] = []

    # --- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.p2p is not None:
                await nursery.start(self.p2p.run)
                nursery.start_soon(self._pump_consensus)
                nursery.start_soon(self._pump_txs)
                nursery.start_soon(self._pump_evidence)
                nursery.start_soon(self._pump_announcements)
                nursery.start_soon(self._sync_loop)
                await self._initial_sync()
            await nursery.start(self.runner.run)
            task_status.started()

    def peer_count(self) -> int:
        return len(self.p2p.peers()) if self.p2p is not None else 0

    # --- consensus -------------------------------------------------------------------

    async def _broadcast(self, data: bytes) -> None:
        if self.p2p is not None:
            await self.p2p.publish("consensus", data)

    async def _on_decide(self, height: int, value: bytes, commit: Commit) -> None:
        if height <= self.store.head_height:
            return  # block sync got there first; the machine only caught up
        block = self.app.commit(height, value, commit)
        if self.p2p is not None:
            try:
                await self.p2p.publish("block", rlp.encode([height, block.hash]))
            except Exception:
                log.exception("block announcement failed")

    def _validators_for(self, height: int):
        return self.store.validators_for(height)

    async def _on_evidence(self, ev: DuplicateVoteEvidence) -> None:
        if self.app.add_evidence(ev):
            log.warning("double-sign evidence against 0x%s at height %d", ev.validator.hex(), ev.height)
            if self.p2p is not None:
                await self.p2p.publish("evidence", ev.encode())

    def _on_invalid(self, peer, effect) -> None:
        if self.p2p is not None and peer is not None:
            self.p2p.penalise(peer, f"consensus:{effect.code}")

    def _check_consensus(self, peer: str, data: bytes) -> bool:
        from consensus.messages import decode_message

        try:
            decode_message(data)
        except ConsensusError:
            return False
        return True  # signatures are checked by the machine, which reports bad ones

    async def _pump_consensus(self) -> None:
        async for msg in self._consensus_inbox:
            await self.runner.submit(msg.data, peer=msg.forwarder)

    # --- transactions and evidence ------------------------------------------------------

    def _check_tx(self, peer: str, data: bytes):
        from p2p.host import Verdict

        try:
            self.app.submit_transaction(data, gossip=False)
        except TxRejected as exc:
            if exc.code in ("already_known", "nonce_too_low", "pool_full", "replacement_underpriced",
                            "insufficient_funds", "nonce_too_high", "fee_too_low"):
                return Verdict.IGNORE  # may be valid elsewhere or stale: not the peer's fault
            return Verdict.REJECT
        return Verdict.ACCEPT

    async def _pump_txs(self) -> None:
        async for _ in self._tx_inbox:
            pass  # already pooled by the validator

    async def publish_tx(self, raw: bytes) -> None:
        if self.p2p is not None:
            await self.p2p.publish("tx", raw)

    def _check_evidence(self, peer: str, data: bytes):
        from p2p.host import Verdict

        try:
            ev = DuplicateVoteEvidence.decode(data)
        except ConsensusError:
            return Verdict.REJECT
        return Verdict.ACCEPT if self.app.add_evidence(ev) else Verdict.IGNORE

    async def _pump_evidence(self) -> None:
        async for _ in self._evidence_inbox:
            pass  # added to the pending evidence by the validator

    # --- block sync ------------------------------------------------------------------------

    def _check_announce(self, peer: str, data: bytes) -> bool:
        try:
            height, _ = rlp.decode(data, sedes=ANNOUNCE_SEDES)
        except Exception:
            return False
        if height > self.store.head_height + 1:
            self._sync_wanted.set()
        return True

    async def _pump_announcements(self) -> None:
        async for _ in self._block_inbox:
            pass

    async def _serve_status(self, peer: str):
        from p2p.reqresp import Head

        head = self.store.head
        return Head(head.height, head.hash)

    async def _serve_blocks(self, peer: str, start: int, end: int) -> list[bytes]:
        out = []
        for h in range(max(1, start), min(end, self.store.head_height) + 1):
            raw = self.store.raw_block(h)
            commit = self.store.commit_at(h)
            if raw is None or commit is None:
                break
            out.append(rlp.encode([raw, commit.encode()]))
        return out

    async def _initial_sync(self) -> None:
        """Before joining consensus, catch up with whatever peers we reach within a few seconds."""
        if not self.node.config.p2p.bootstrap:
            return
        with trio.move_on_after(5):
            while not self.p2p.peers():
                await trio.sleep(0.2)
        await self._sync_once()

    async def _sync_loop(self) -> None:
        while True:
            with trio.move_on_after(SYNC_INTERVAL_S * 3):
                await self._sync_wanted.wait()
            self._sync_wanted = trio.Event()
            try:
                await self._sync_once()
            except Exception:
                log.exception("block sync round failed")
            await trio.sleep(SYNC_INTERVAL_S)

    async def _sync_once(self) -> int:
        """Fetch and commit blocks from the most advanced peer; returns blocks committed."""
        from p2p.errors import P2PError

        best = None
        for peer in self.p2p.peers():
            try:
                status = await self.p2p.request_status(peer.peer_id)
            except P2PError:
                continue
            if status.height > self.store.head_height + 1 and (best is None or status.height > best[1]):
                best = (peer.peer_id, status.height)
        if best is None:
            return 0
        peer_id, target = best
        committed = 0
        self.syncing = True
        try:
            while self.store.head_height < target:
                start = self.store.head_height + 1
                try:
                    items = await self.p2p.request_blocks(peer_id, start, min(target, start + SYNC_BATCH - 1))
                except P2PError as exc:
                    log.info("block sync from %s stopped: %s", peer_id, exc)
                    break
                if not items:
                    break
                for item in items:
                    if not self._commit_synced(peer_id, item):
                        return committed
                    committed += 1
            if committed:
                height = self.store.head_height + 1
                log.info("block sync: committed %d blocks, now at %d", committed, height - 1)
                await self.runner.jump_to_height(height, self.store.validators_for(height))
        finally:
            self.syncing = False
        return committed

    def _commit_synced(self, peer_id: str, item: bytes) -> bool:
        """Verify a fetched block's commit against the validator set of its height, then
        execute and commit it; a peer that sends a bad one is penalised."""
        height = self.store.head_height + 1
        try:
            raw, raw_commit = rlp.decode(item, sedes=SYNC_ITEM_SEDES)
            block = Block.decode(raw)
            commit = Commit.decode(raw_commit)
            if block.height != height:
                raise MalformedBlock(f"expected height {height}, got {block.height}")
            self.store.validators_for(height).verify_commit(self.chain_id, height, block.hash, commit)
            self.app.commit(height, raw, commit)
        except Exception as exc:
            log.warning("peer %s sent a bad block %d: %s", peer_id, height, exc)
            self.p2p.penalise(peer_id, "sync:bad_block")
            return False
        return True
