"""geth's ``txpool_`` namespace, in geth's shapes, so that web3.py's ``w3.geth.txpool``,
ethers' ``send("txpool_content")`` and monitoring scripts work unchanged
(docs/rpc.md, "Transaction pool").

``pending`` are the executable transactions (the sender's next nonce and a contiguous
chain after it), ``queued`` those waiting behind a nonce gap. Content is keyed by the
sender's checksummed address, then by the nonce as a decimal string, as geth does.
"""

from __future__ import annotations

from typing import Any

from eth_utils import to_checksum_address

from node.mempool import PoolTx
from node.rpc import params as p
from node.rpc.ethjson import hexb, hexq, tx_json
from node.rpc.registry import MethodTable, Param, RPCContext

methods = MethodTable()


def _tx(entry: PoolTx) -> dict[str, Any]:
    out = tx_json(entry.tx, sender=entry.sender, block_hash=None, height=None, index=None)
    out["hash"] = hexb(entry.hash)  # the pool's envelope hash (py-evm would re-encode)
    return out


def _summary(entry: PoolTx) -> str:
    """geth's one-line form: "<to>: <value> wei + <gas> gas × <gas price> wei", with
    the fee cap as the gas price of a dynamic-fee transaction (geth's ``tx.GasPrice()``)."""
    tx = entry.tx
    to = to_checksum_address(tx.to) if tx.to else "contract creation"
    return f"{to}: {tx.value} wei + {tx.gas} gas × {tx.max_fee_per_gas} wei"


def _by_nonce(entries: list[PoolTx], render) -> dict[str, Any]:
    return {str(e.nonce): render(e) for e in entries}


def _grouped(ctx: RPCContext, render) -> dict[str, dict[str, dict[str, Any]]]:
    pending, queued = ctx.mempool.content()
    return {
        name: {to_checksum_address(sender): _by_nonce(entries, render)
               for sender, entries in group.items()}
        for name, group in (("pending", pending), ("queued", queued))
    }


@methods.method("txpool_status")
def status(ctx: RPCContext) -> dict[str, str]:
    """``{"pending": "0x..", "queued": "0x.."}``: transaction counts."""
    pending, queued = ctx.mempool.stats()
    return {"pending": hexq(pending), "queued": hexq(queued)}


# content and inspect render up to the whole pool (~70 us a transaction, 0.7 s at the
# default bound): in a worker thread, from the pool's snapshot, off the consensus loop.
@methods.method("txpool_content", blocking=True)
def content(ctx: RPCContext) -> dict[str, Any]:
    """Every pooled transaction as ``eth_getTransactionByHash`` shows a pending one."""
    return _grouped(ctx, _tx)


@methods.method("txpool_inspect", blocking=True)
def inspect(ctx: RPCContext) -> dict[str, Any]:
    """Every pooled transaction as geth's summary string."""
    return _grouped(ctx, _summary)


@methods.method("txpool_contentFrom", Param("address", p.address))
def content_from(ctx: RPCContext, address: bytes) -> dict[str, Any]:
    """One sender's transactions: ``{"pending": {nonce: tx}, "queued": {nonce: tx}}``."""
    pending, queued = ctx.mempool.content_of(address)
    return {"pending": _by_nonce(pending, _tx), "queued": _by_nonce(queued, _tx)}


def register(table: MethodTable) -> None:
    table.include(methods)
