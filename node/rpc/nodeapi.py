"""What the RPC server may use of the node: a narrow, structural interface.

The RPC package depends on this Protocol, never on :class:`node.node.Node`, so the
node starts the server without the server importing the node back (an import circle
of ten modules before). Anything that has these attributes can be served: the node
process, or a test's stand-in built from the same parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from node.app import Application
    from node.attestations import AttestationService
    from node.config import Config
    from node.mempool import Mempool
    from node.store import ChainStore


class NodeAPI(Protocol):
    config: Config
    chain_id: int
    store: ChainStore
    app: Application
    mempool: Mempool
    attestations: AttestationService
    address: bytes | None  # the validator address, None on a non-validator
    validator_key: bytes | None  # signs access tokens (node/tokens.py); None on a non-validator
    rpc_port: int | None
    network: Any  # node.network.NetworkService once it runs, else None
    peer_id: str  # the libp2p peer id: the audience telemetry read requests name
