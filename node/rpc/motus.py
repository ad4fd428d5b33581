"""The ``motus_`` namespace basics: node status, and what a light client needs to
verify the chain itself (headers with their RLP, commits, validator sets), plus the
system contracts' addresses and ABIs.

Conventions of this namespace: heights, counts and powers are JSON numbers (all far
below 2^53); hashes, addresses, signatures and raw RLP are 0x-hex; token amounts, which
can exceed 2^53, are decimal strings.
"""

from __future__ import annotations

from typing import Any

from node.rpc import params as p
from node.rpc.errors import invalid_params
from node.rpc.eth import peer_count, resolve_height
from node.rpc.ethjson import hexb
from node.rpc.registry import MethodTable, Param, RPCContext
from node.version import CLIENT_VERSION
from vm.block import header_fields
from vm.modules import addresses
from vm.modules.base import shipped_abi

methods = MethodTable()


def height_or_tag(value: Any) -> p.BlockRef:
    """A height as a number or hex quantity, or a block tag (latest, earliest...)."""
    if isinstance(value, str) and value in p.BLOCK_TAGS:
        return p.BlockRef(tag=value)
    return p.BlockRef(number=p.height(value))


HEIGHT = Param("height", height_or_tag, p.LATEST)


@methods.method("motus_nodeStatus")
def node_status(ctx: RPCContext) -> dict[str, Any]:
    """What an operator checks first: who am I, where is my head, am I connected."""
    from node.health import node_health

    node = ctx.node
    head = ctx.store.head
    validators = ctx.store.validators_for(head.height + 1)
    network = getattr(node, "network", None)
    is_validator = (
        node.address is not None
        and validators is not None
        and validators.get(node.address) is not None
    )
    health, _ = node_health(node)
    return {
        "moniker": node.config.node.moniker,
        "clientVersion": CLIENT_VERSION,
        "chainId": ctx.chain_id,
        "genesisHash": hexb(ctx.store.genesis_hash),
        "head": {
            "height": head.height,
            "hash": hexb(head.hash),
            "timestampMs": head.timestamp_ms,
            "stateRoot": hexb(head.state_root),
        },
        "validator": None if node.address is None else hexb(node.address),
        "isValidator": is_validator,
        "peers": peer_count(node),
        "bannedPeers": network.banned_peer_count() if network is not None else 0,
        "mempoolSize": len(ctx.mempool),
        "syncing": bool(getattr(network, "syncing", False)),
        "consensus": network.consensus_status() if network is not None else None,
        "rpcPort": node.rpc_port,
        "peerId": getattr(node, "peer_id", None),
        "health": {"status": health.status, "reason": health.reason},
        "listenAddrs": _listen_addrs(network),
        "attestations": _attestation_totals(node),
    }


def _listen_addrs(network: Any) -> list[str]:
    """Full multiaddrs others dial to reach us (``/ip4/HOST/tcp/PORT/p2p/PEER_ID``); empty
    before the host listens or without p2p."""
    p2p = getattr(network, "p2p", None)
    if p2p is None or not p2p.running:
        return []
    return [p2p.listen_multiaddr]


def _attestation_totals(node: Any) -> dict[str, int] | None:
    """Attestations admitted into the pool, refused, and pending, since the node started
    (None on a node without an attestation pool)."""
    svc = getattr(node, "attestations", None)
    if svc is None:
        return None
    return {"accepted": svc.accepted, "refused": sum(svc.counters.snapshot().values()),
            "pending": len(svc.pool)}


@methods.method("motus_getHeader", HEIGHT)
def get_header(ctx: RPCContext, ref: p.BlockRef) -> dict[str, Any] | None:
    height = resolve_height(ctx, ref)
    header = None if height is None else ctx.store.header_by_height(height)
    return None if header is None else header_fields(header)


@methods.method("motus_getCommit", HEIGHT)
def get_commit(ctx: RPCContext, ref: p.BlockRef) -> dict[str, Any] | None:
    """The commit that finalised the block at ``height`` (>2/3 of the voting power of
    precommits for its hash); null for genesis and unknown heights."""
    height = resolve_height(ctx, ref)
    commit = None if height is None else ctx.store.commit_at(height)
    if commit is None:
        return None
    return {
        "height": commit.height,
        "round": commit.round,
        "blockHash": hexb(commit.block_hash),
        "signatures": [
            {"validator": hexb(s.validator), "signature": hexb(s.signature)}
            for s in commit.signatures
        ],
        "rlp": hexb(commit.encode()),
    }


@methods.method("motus_getValidators", HEIGHT)
def get_validators(ctx: RPCContext, ref: p.BlockRef) -> dict[str, Any] | None:
    """The validator set that signs the block at ``height`` (known up to head + 1)."""
    if ref.tag is not None:
        height = resolve_height(ctx, ref)
    else:
        height = ref.number
        if height is not None and height > ctx.store.head_height + 1:
            return None
    if height is None:
        return None
    if height == 0:
        raise invalid_params(
            "invalid argument 0 (height): genesis (0) has no signers; "
            "the first validator set is that of height 1"
        )
    vs = ctx.store.validators_for(height)
    if vs is None:
        return None
    return {
        "height": height,
        "hash": hexb(vs.hash()),
        "totalPower": vs.total_power,
        "validators": [
            {
                "address": hexb(v.address),
                "power": v.power,
                "proposerPriority": vs.priorities.get(v.address, 0),
            }
            for v in vs.validators
        ],
    }


@methods.method("motus_systemContracts")
def system_contracts(ctx: RPCContext) -> dict[str, Any]:
    """Each system module's address and, when shipped, its ABI (for web3.py/ethers)."""
    return {
        name: {"address": hexb(addr), "abi": shipped_abi(name)} for name, addr in addresses.ALL.items()
    }


def register(table: MethodTable) -> None:
    table.include(methods)
