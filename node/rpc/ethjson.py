"""Ethereum-shaped JSON for blocks, transactions, receipts and logs, as geth answers
them (hex quantities, lowercase hex addresses), plus the Motus header fields.

Fields a proof-of-work chain has and Motus does not are fixed: difficulty and
totalDifficulty 0, nonce 0x0000000000000000, no uncles. ``mixHash`` is the parent
hash, the value the EVM's PREVRANDAO sees on this chain (see vm.state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import rlp
from eth.abc import ReceiptAPI, SignedTransactionAPI
from eth_bloom import BloomFilter
from eth_hash.auto import keccak

from node.block import Block
from node.store import TxExtra
from vm.block import Header
from vm.execute import receipt_status
from vm.state import decode_transaction

EMPTY_UNCLES_HASH = keccak(rlp.encode([]))
ZERO_NONCE = "0x0000000000000000"


def hexq(value: int) -> str:
    """A JSON-RPC quantity: hex, no leading zeros."""
    return hex(value)


def hexb(value: bytes) -> str:
    """JSON-RPC data: 0x + two hex digits per byte."""
    return "0x" + bytes(value).hex()


def _topic_bytes(topic: int | bytes) -> bytes:
    return topic.to_bytes(32, "big") if isinstance(topic, int) else bytes(topic)


def header_json(header: Header, *, size: int | None = None, motus: bool = True) -> dict[str, Any]:
    """The header as an Ethereum block header, plus the Motus fields unless ``motus`` is
    false. newHeads leaves them out: web3.py recognises a header by its key set and
    would not decode one with many unknown keys (fetch them with eth_getBlockByHash)."""
    out: dict[str, Any] = {
        "number": hexq(header.height),
        "hash": hexb(header.hash),
        "parentHash": hexb(header.parent_hash),
        "nonce": ZERO_NONCE,
        "sha3Uncles": hexb(EMPTY_UNCLES_HASH),
        "logsBloom": hexb(header.logs_bloom),
        "transactionsRoot": hexb(header.transactions_root),
        "stateRoot": hexb(header.state_root),
        "receiptsRoot": hexb(header.receipts_root),
        "miner": hexb(header.proposer),
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "gasLimit": hexq(header.gas_limit),
        "gasUsed": hexq(header.gas_used),
        "timestamp": hexq(header.timestamp),
        "baseFeePerGas": hexq(header.base_fee_per_gas),
        "mixHash": hexb(header.parent_hash),
    }
    if size is not None:
        out["size"] = hexq(size)
    if motus:
        out.update(
            {
                "timestampMs": hexq(header.timestamp_ms),
                "attestationsRoot": hexb(header.attestations_root),
                "validatorsHash": hexb(header.validators_hash),
                "nextValidatorsHash": hexb(header.next_validators_hash),
                "lastCommitHash": hexb(header.last_commit_hash),
                "evidenceHash": hexb(header.evidence_hash),
            }
        )
    return out


def block_json(block: Block, extras: Sequence[TxExtra], *, full: bool) -> dict[str, Any]:
    """eth_getBlockBy*: header fields, size, uncles and the transactions (hashes or objects)."""
    header = block.header
    out = header_json(header, size=len(block.encode()))
    if full:
        out["transactions"] = [
            tx_json(
                decode_transaction(raw),
                sender=extras[i].sender,
                block_hash=header.hash,
                height=header.height,
                index=i,
                gas_price=extras[i].effective_gas_price,
            )
            for i, raw in enumerate(block.transactions)
        ]
    else:
        out["transactions"] = [hexb(e.tx_hash) for e in extras]
    out["uncles"] = []
    out["attestationCount"] = hexq(len(block.attestations))
    return out


def _access_list(tx: SignedTransactionAPI) -> list[dict[str, Any]]:
    return [
        {"address": hexb(account), "storageKeys": [hexb(k.to_bytes(32, "big")) for k in keys]}
        for account, keys in tx.access_list
    ]


def tx_json(
    tx: SignedTransactionAPI,
    *,
    sender: bytes,
    block_hash: bytes | None,
    height: int | None,
    index: int | None,
    gas_price: int | None = None,
) -> dict[str, Any]:
    """A transaction object; ``block_hash``/``height``/``index`` are None while pending.
    ``gas_price`` is the effective price once mined (for EIP-1559 transactions geth
    reports the effective price; pending ones report their max fee)."""
    type_id = getattr(tx, "type_id", None) or 0
    out: dict[str, Any] = {
        "type": hexq(type_id),
        "hash": hexb(tx.hash),
        "nonce": hexq(tx.nonce),
        "blockHash": None if block_hash is None else hexb(block_hash),
        "blockNumber": None if height is None else hexq(height),
        "transactionIndex": None if index is None else hexq(index),
        "from": hexb(sender),
        "to": hexb(tx.to) if tx.to else None,
        "value": hexq(tx.value),
        "gas": hexq(tx.gas),
        "input": hexb(tx.data),
        "r": hexq(tx.r),
        "s": hexq(tx.s),
    }
    if type_id == 0:
        out["gasPrice"] = hexq(tx.gas_price)
        out["v"] = hexq(tx.v)  # type: ignore[attr-defined]  # legacy transactions have v
        if tx.chain_id is not None:
            out["chainId"] = hexq(tx.chain_id)
        return out
    out["chainId"] = hexq(tx.chain_id or 0)  # typed transactions always carry one
    out["accessList"] = _access_list(tx)
    y_parity = int(tx.y_parity or 0)
    out["v"] = hexq(y_parity)
    out["yParity"] = hexq(y_parity)
    if type_id == 1:
        out["gasPrice"] = hexq(tx.gas_price)
    else:
        out["maxFeePerGas"] = hexq(tx.max_fee_per_gas)
        out["maxPriorityFeePerGas"] = hexq(tx.max_priority_fee_per_gas)
        out["gasPrice"] = hexq(gas_price if gas_price is not None else tx.max_fee_per_gas)
    return out


def log_json(
    log: Any, *, block_hash: bytes, height: int, tx_hash: bytes, tx_index: int, log_index: int
) -> dict[str, Any]:
    return log_parts_json(
        log.address, [_topic_bytes(t) for t in log.topics], log.data, block_hash=block_hash,
        height=height, tx_hash=tx_hash, tx_index=tx_index, log_index=log_index,
    )


def log_parts_json(
    address: bytes, topics: list[bytes], data: bytes, *, block_hash: bytes, height: int,
    tx_hash: bytes, tx_index: int, log_index: int,
) -> dict[str, Any]:
    """A log as JSON from its address, 32-byte topics and data."""
    return {
        "address": hexb(address),
        "topics": [hexb(t) for t in topics],
        "data": hexb(data),
        "blockNumber": hexq(height),
        "blockHash": hexb(block_hash),
        "transactionHash": hexb(tx_hash),
        "transactionIndex": hexq(tx_index),
        "logIndex": hexq(log_index),
        "removed": False,
    }


def block_logs(
    header: Header,
    receipts: Sequence[ReceiptAPI],
    tx_hashes: Sequence[bytes],
    match: Callable[[bytes, list[bytes]], bool] | None = None,
) -> list[dict[str, Any]]:
    """The logs of a block as JSON, in order, keeping those for which
    ``match(address, topics)`` is true (all when ``match`` is None). ``logIndex``
    counts every log of the block, matched or not, as geth does."""
    out = []
    log_index = 0
    for tx_index, receipt in enumerate(receipts):
        for log in receipt.logs:
            topics = [_topic_bytes(t) for t in log.topics]
            if match is None or match(bytes(log.address), topics):
                out.append(
                    log_json(
                        log,
                        block_hash=header.hash,
                        height=header.height,
                        tx_hash=tx_hashes[tx_index],
                        tx_index=tx_index,
                        log_index=log_index,
                    )
                )
            log_index += 1
    return out


def receipt_json(
    header: Header,
    receipts: Sequence[ReceiptAPI],
    extras: Sequence[TxExtra],
    tx: SignedTransactionAPI,
    index: int,
) -> dict[str, Any]:
    """The receipt of transaction ``index`` of a block (its logs carry block-wide indexes)."""
    receipt = receipts[index]
    extra = extras[index]
    first_log = sum(len(r.logs) for r in receipts[:index])
    logs = [
        log_json(
            log,
            block_hash=header.hash,
            height=header.height,
            tx_hash=extra.tx_hash,
            tx_index=index,
            log_index=first_log + i,
        )
        for i, log in enumerate(receipt.logs)
    ]
    return {
        "transactionHash": hexb(extra.tx_hash),
        "transactionIndex": hexq(index),
        "blockHash": hexb(header.hash),
        "blockNumber": hexq(header.height),
        "from": hexb(extra.sender),
        "to": hexb(tx.to) if tx.to else None,
        "cumulativeGasUsed": hexq(receipt.gas_used),
        "gasUsed": hexq(extra.gas_used),
        "effectiveGasPrice": hexq(extra.effective_gas_price),
        "contractAddress": hexb(extra.contract_address) if extra.contract_address else None,
        "logs": logs,
        "logsBloom": hexb(int(receipt.bloom).to_bytes(256, "big")),
        "type": hexq(getattr(tx, "type_id", None) or 0),
        "status": hexq(receipt_status(receipt)),
    }


SYSTEM_ADDRESS = bytes(20)  # from and to of a block's system transaction


def system_tx_json(block: Block, tx_hash: bytes) -> dict[str, Any]:
    """The pseudo-transaction that carries a block's events (docs/rpc.md, "Block
    events"): from and to the zero address, nothing paid, no signature, one index past
    the block's last transaction."""
    return {
        "type": "0x0",
        "hash": hexb(tx_hash),
        "nonce": "0x0",
        "blockHash": hexb(block.hash),
        "blockNumber": hexq(block.height),
        "transactionIndex": hexq(len(block.transactions)),
        "from": hexb(SYSTEM_ADDRESS),
        "to": hexb(SYSTEM_ADDRESS),
        "value": "0x0",
        "gas": "0x0",
        "gasPrice": "0x0",
        "input": "0x",
        "v": "0x0",
        "r": "0x0",
        "s": "0x0",
    }


def system_receipt_json(
    block: Block, tx_hash: bytes, events: Sequence[Any], logs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The receipt of a block's system transaction: status 1, no gas, the block events as
    its logs and its own logs bloom (the header's does not cover them)."""
    bloom = BloomFilter()
    for ev in events:
        bloom.add(ev.address)
        for topic in ev.topics:
            bloom.add(topic)
    return {
        "transactionHash": hexb(tx_hash),
        "transactionIndex": hexq(len(block.transactions)),
        "blockHash": hexb(block.hash),
        "blockNumber": hexq(block.height),
        "from": hexb(SYSTEM_ADDRESS),
        "to": hexb(SYSTEM_ADDRESS),
        "cumulativeGasUsed": hexq(block.header.gas_used),
        "gasUsed": "0x0",
        "effectiveGasPrice": "0x0",
        "contractAddress": None,
        "logs": logs,
        "logsBloom": hexb(int(bloom).to_bytes(256, "big")),
        "type": "0x0",
        "status": "0x1",
    }
