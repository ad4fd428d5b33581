"""WebSocket ``logs`` subscriptions see block events (rewards, tallies) exactly as
``eth_getLogs`` serves them: after the receipts' logs, under the block-events hash."""

from types import SimpleNamespace

from consensus.types import EMPTY_COMMIT
from node.block import Block
from node.rpc.subscriptions import _block_logs
from tests.harness import LocalChain
from vm.events import BlockEvent, compute_block_events_tx_hash
from vm.modules import addresses


def test_block_events_reach_log_subscribers():
    chain = LocalChain()
    chain.block()
    block = Block(chain.head, [], [], EMPTY_COMMIT, [])
    event = BlockEvent(addresses.REWARDS, (b"\x11" * 32, b"\x00" * 31 + b"\x07"), b"\x01" * 32)
    result = SimpleNamespace(receipts=[], transactions=[], block_events=[event])
    logs = _block_logs(block, result)
    assert len(logs) == 1
    address, topics, doc = logs[0]
    assert address == addresses.REWARDS and topics == list(event.topics)
    assert doc["transactionHash"] == "0x" + compute_block_events_tx_hash(block.hash).hex()
    assert doc["logIndex"] == "0x0" and doc["blockNumber"] == hex(block.height)
