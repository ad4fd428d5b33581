"""Whether a node is healthy, and if not why: the one verdict behind ``GET /health``,
``motus_nodeStatus.health``, ``motus status``, the devnet status view and the fleet
simulator (docs/rpc.md, "Health").

A node is unhealthy, in this order of precedence (the first that holds is reported):
- ``syncing``: a sync round is committing verified blocks and the node is more than
  ``health.max_sync_lag_blocks`` behind the height that round's peer claims;
- ``no_peers``: the network has other members (the validator set of the next height
  has more than one, or bootstrap peers are configured) but no peer is connected;
- ``stalled``: the head block is older than ``health.max_head_age_seconds``.
Otherwise it is ``ok``. The order puts the cause before the symptom: a node with no
peers also stalls, and a syncing node's head is old by nature.

Warnings do not change the status (they are about the chain, not this node): the
answer lists them under ``warnings``, today only ``settlement_backlog`` (the chain's
reward settlement spans more than one epoch: docs/rewards.md "Backlog").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vm.modules.rewards import settlement_backlog

OK = "ok"
SYNCING = "syncing"
NO_PEERS = "no_peers"
STALLED = "stalled"


@dataclass(frozen=True)
class Observation:
    """What the verdict is computed from (read from a node by :func:`observe`)."""

    height: int
    head_age_s: float
    syncing: bool
    # height the running sync round fetches up to, once its peer served a verified block
    sync_target: int | None
    peers: int
    expects_peers: bool  # other validators exist or bootstrap peers are configured
    max_head_age_seconds: float
    max_sync_lag_blocks: int
    # the head state's reward settlement backlog, in ended epochs not settled
    settlement_backlog_epochs: int = 0


@dataclass(frozen=True)
class Health:
    status: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def http_status(self) -> int:
        return 200 if self.ok else 503


def assess(o: Observation) -> Health:
    """The verdict for ``o`` (see the module docstring for the rules and their order)."""
    if o.syncing and o.sync_target is not None:
        lag = o.sync_target - o.height
        if lag > o.max_sync_lag_blocks:
            return Health(SYNCING, f"syncing: at height {o.height}, {lag} blocks behind "
                                   f"the peer it syncs from (height {o.sync_target})")
    if o.expects_peers and o.peers == 0:
        return Health(NO_PEERS, "no peers connected on a network with other validators or "
                                "bootstrap peers: check p2p.bootstrap, the peers' p2p ports "
                                "and the firewall")
    if o.head_age_s > o.max_head_age_seconds:
        return Health(STALLED, f"chain stalled at height {o.height}: no new block for "
                               f"{o.head_age_s:.0f} s (bound {o.max_head_age_seconds:g} s)")
    return Health(OK, "")


def warnings(o: Observation) -> list[dict[str, str]]:
    """What an operator should know that does not make the node unhealthy."""
    out = []
    if o.settlement_backlog_epochs > 1:
        out.append({"code": "settlement_backlog",
                    "message": f"reward settlement is {o.settlement_backlog_epochs} epochs behind: "
                               "the fleet outgrows the epoch; governance should raise "
                               "settle_vehicles_per_block or epoch_length_blocks"})
    return out


def observe(node: Any, now: float | None = None) -> Observation:
    """Read what :func:`assess` needs from a running node."""
    head = node.store.head
    now = time.time() if now is None else now
    network = getattr(node, "network", None)
    p2p_enabled = node.config.p2p.enabled
    validators = node.store.validators_for(head.height + 1)
    peers = network.peer_count() if network is not None else 0
    return Observation(
        height=head.height,
        head_age_s=max(0.0, now - head.timestamp_ms / 1000),
        syncing=bool(getattr(network, "syncing", False)),
        sync_target=getattr(network, "sync_target", None),
        peers=peers,
        expects_peers=p2p_enabled and (
            bool(node.config.p2p.bootstrap)
            or (validators is not None and len(validators.validators) > 1)),
        max_head_age_seconds=node.config.health.max_head_age_seconds,
        max_sync_lag_blocks=node.config.health.max_sync_lag_blocks,
        settlement_backlog_epochs=settlement_backlog(node.app.head_state()),
    )


def node_health(node: Any) -> tuple[Health, Observation]:
    o = observe(node)
    return assess(o), o


def health_document(node: Any) -> tuple[int, dict[str, Any]]:
    """The ``/health`` answer: HTTP status and JSON body."""
    health, o = node_health(node)
    doc: dict[str, Any] = {
        "status": health.status,
        "chainId": node.chain_id,
        "height": o.height,
        "headAgeSeconds": round(o.head_age_s, 3),
        "syncing": o.syncing,
        "peers": o.peers,
    }
    if o.sync_target is not None:
        doc["syncTarget"] = o.sync_target
    if not health.ok:
        doc["reason"] = health.reason
    notes = warnings(o)
    if notes:
        doc["warnings"] = notes
    return health.http_status, doc
