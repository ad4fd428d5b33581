"""web3.py against a Motus node: each ``check("name", fn)`` is one case that the pytest
wrapper (test_web3py.py) reports by name, printed as one JSON line. Run through pytest,
which starts the node and sets MOTUS_RPC_URL, MOTUS_WS_URL, MOTUS_DEV_KEYS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import rlp
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_hash.auto import keccak
from trie import HexaryTrie
from web3 import AsyncWeb3, Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    Web3RPCError,
)
from web3.providers.persistent import WebSocketProvider

HERE = Path(__file__).resolve().parent
RPC_URL = os.environ["MOTUS_RPC_URL"]
WS_URL = os.environ["MOTUS_WS_URL"]
CHAIN_ID = int(os.environ.get("MOTUS_CHAIN_ID", "7077"))
KEYS = [k if k.startswith("0x") else "0x" + k for k in os.environ["MOTUS_DEV_KEYS"].split(",")]
CASE_TIMEOUT = 20.0
GWEI = 10**9
ZERO_HASH = b"\x00" * 32

w3 = Web3(Web3.HTTPProvider(RPC_URL, request_kwargs={"timeout": 10}))
deployer, payer, speeder, canceller, estimator, emitter = (Account.from_key(k) for k in KEYS[:6])
stranger = Account.create().address
C = json.loads(Path(subprocess.check_output(["node", str(HERE / "lib" / "contracts.mjs")], text=True).strip()).read_text())
results: dict[str, bool] = {}
state: dict[str, object] = {}


def check(name: str, fn, needs: tuple[str, ...] = ()) -> None:
    """Run one case; print {"name", "ok", "detail"}. A case whose prerequisite failed
    fails at once saying so."""
    missing = [n for n in needs if not results.get(n)]
    if missing:
        ok, detail = False, f"not run: depends on failed case(s) {', '.join(missing)}"
    else:
        try:
            fn()
            ok, detail = True, ""
        except Exception as e:  # every failure is a result line, never a crash of the run
            ok, detail = False, f"{type(e).__name__}: {e}"
    results[name] = ok
    print(json.dumps({"name": name, "ok": ok, "detail": detail[:2000]}), flush=True)


def wait(tx_hash, timeout: float = 10) -> dict:
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.1)


def send(acct, tx: dict) -> bytes:
    """Fill (web3 estimates gas and fees where absent), sign and send."""
    tx = {"from": acct.address, "chainId": CHAIN_ID, "nonce": w3.eth.get_transaction_count(acct.address, "pending"), **tx}
    if "gas" not in tx:
        tx["gas"] = w3.eth.estimate_gas(tx)
    if "maxFeePerGas" not in tx and "gasPrice" not in tx:
        tx["maxPriorityFeePerGas"] = w3.eth.max_priority_fee
        tx["maxFeePerGas"] = 2 * w3.eth.get_block("latest")["baseFeePerGas"] + tx["maxPriorityFeePerGas"]
    return w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)


def transact(acct, fn, **overrides) -> dict:
    tx = fn.build_transaction({"from": acct.address, "chainId": CHAIN_ID,
                               "nonce": w3.eth.get_transaction_count(acct.address, "pending"), **overrides})
    return wait(w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction))


def contract(name: str, address=None):
    c = C[name]
    if address is None:
        return w3.eth.contract(abi=c["abi"], bytecode=c["bytecode"])
    return w3.eth.contract(address=address, abi=c["abi"])


def deploy(name: str, *args):
    receipt = transact(deployer, contract(name).constructor(*args))
    assert receipt["status"] == 1, receipt
    return contract(name, receipt["contractAddress"])


def expect(exc_types, fn):
    try:
        fn()
    except exc_types as e:
        return e
    raise AssertionError(f"expected {exc_types}")


# ---- deploys and transfers ----
def chain_id():
    assert w3.eth.chain_id == CHAIN_ID, w3.eth.chain_id


check("chain_id", chain_id)


def deploy_erc20():
    state["token"] = deploy("Token", 10**24)
    assert state["token"].functions.balanceOf(deployer.address).call() == 10**24


def deploy_minimal():
    state["minimal"] = deploy("Minimal")


def deploy_payload():
    arg = os.urandom(1024)
    p = deploy("Payload", arg)
    assert p.functions.digest().call() == keccak(arg)


def deploy_reverter():
    state["reverter"] = deploy("Reverter")


check("deploy_erc20", deploy_erc20)
check("deploy_minimal", deploy_minimal)
check("deploy_constructor_1kb_argument", deploy_payload)
check("deploy_reverter", deploy_reverter)


def transfer_native():
    r = wait(send(payer, {"to": stranger, "value": 10**18}))
    assert r["status"] == 1 and w3.eth.get_balance(stranger) == 10**18


def transfer_erc20():
    token = state["token"]
    r = transact(deployer, token.functions.transfer(payer.address, 999))
    ev = token.events.Transfer().process_receipt(r)
    assert ev[0]["args"]["value"] == 999, ev


def block_with_transactions():
    r = wait(send(payer, {"to": stranger, "value": 7, "gas": 21000}))
    block = w3.eth.get_block(r["blockNumber"], full_transactions=True)
    assert any(t["hash"] == r["transactionHash"] and t["from"] == payer.address for t in block["transactions"])


check("transfer_native", transfer_native)
check("block_with_transactions", block_with_transactions)
check("transfer_erc20", transfer_erc20, needs=("deploy_erc20",))

# ---- estimates ----


def estimate(tx: dict, low: int, high: int):
    gas = w3.eth.estimate_gas({"from": estimator.address, **tx})
    assert low <= gas <= high, gas


check("estimate_data_to_eoa", lambda: estimate({"to": stranger, "data": "0xab"}, 21016, 30000))
check("estimate_empty_creation", lambda: estimate({"data": "0x"}, 53000, 60000))
check("estimate_large_calldata", lambda: estimate({"to": stranger, "data": "0x" + "01" * 4096}, 21000 + 16 * 4096, 200000))


def send_data_to_eoa():
    assert wait(send(estimator, {"to": stranger, "data": "0xab"}))["status"] == 1


check("send_data_to_eoa_estimated", send_data_to_eoa)

# ---- replacement ----


def replacement_speed_up():
    n = w3.eth.get_transaction_count(speeder.address, "pending")
    base = {"chainId": CHAIN_ID, "to": stranger, "gas": 21000, "value": 1}
    sign = lambda **kw: w3.eth.send_raw_transaction(speeder.sign_transaction({**base, **kw}).raw_transaction)  # noqa: E731
    later = sign(nonce=n + 1, maxFeePerGas=10 * GWEI, maxPriorityFeePerGas=GWEI)
    repl = sign(nonce=n + 1, maxFeePerGas=20 * GWEI, maxPriorityFeePerGas=2 * GWEI, value=2)
    first = sign(nonce=n, maxFeePerGas=10 * GWEI, maxPriorityFeePerGas=GWEI)
    assert wait(first)["status"] == 1
    assert wait(repl, timeout=8)["status"] == 1
    assert w3.eth.get_transaction_count(speeder.address) == n + 2
    expect(Exception, lambda: w3.eth.get_transaction_receipt(later))


check("replacement_speed_up", replacement_speed_up)

# ---- reverts decoded by web3.py ----


def revert_string():
    e = expect(ContractLogicError, lambda: state["reverter"].functions.failString().call())
    assert "reverter: plain reason" in str(e), e


def revert_panic():
    e = expect(ContractPanicError, lambda: state["reverter"].functions.failPanic(0).call())
    assert "division or modulo by zero" in str(e).lower() or "0x12" in str(e), e


def revert_custom():
    e = expect(ContractCustomError, lambda: state["reverter"].functions.failCustom().call({"from": payer.address}))
    data = bytes.fromhex(str(e.data)[2:])
    selector = keccak(b"Unauthorized(address,uint256)")[:4]
    assert data[:4] == selector, e.data
    who, code = abi_decode(["address", "uint256"], data[4:])
    assert who.lower() == payer.address.lower() and code == 42


def revert_estimate():
    e = expect(ContractLogicError, lambda: state["reverter"].functions.mustBePositive(0).estimate_gas())
    assert "x must be positive" in str(e), e


check("revert_error_string", revert_string, needs=("deploy_reverter",))
check("revert_panic", revert_panic, needs=("deploy_reverter",))
check("revert_custom_error", revert_custom, needs=("deploy_reverter",))
check("revert_in_estimate", revert_estimate, needs=("deploy_reverter",))

# ---- logs and filters ----


def get_logs():
    logs = state["token"].events.Transfer().get_logs(from_block=0, argument_filters={"to": payer.address})
    assert any(log_["args"]["value"] == 999 for log_ in logs), logs


def set_value(v: int) -> dict:
    return transact(emitter, state["minimal"].functions.set(v))


def poll(fn, seconds: float = 8):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("nothing arrived in time")


def event_filter():
    f = state["minimal"].events.Set().create_filter(from_block="latest")
    set_value(61)
    got = poll(f.get_new_entries)
    assert got[0]["args"]["value"] == 61
    assert any(e["args"]["value"] == 61 for e in f.get_all_entries())
    assert w3.eth.uninstall_filter(f.filter_id)


def block_filter():
    f = w3.eth.filter("latest")
    hashes = poll(f.get_new_entries)
    assert w3.eth.get_block(hashes[0])["hash"] == hashes[0]
    assert w3.eth.uninstall_filter(f.filter_id)


def pending_filter():
    f = w3.eth.filter("pending")
    h = send(emitter, {"to": stranger, "value": 1, "gas": 21000})
    seen: set = set()
    poll(lambda: (seen.update(f.get_new_entries()), h in seen)[1])
    wait(h)
    w3.eth.uninstall_filter(f.filter_id)


check("get_logs", get_logs, needs=("transfer_erc20",))
check("event_filter", event_filter, needs=("deploy_minimal",))
check("block_filter", block_filter)
check("pending_transaction_filter", pending_filter)

# ---- WebSocket subscriptions ----


async def _subscriptions() -> None:
    async with AsyncWeb3(WebSocketProvider(WS_URL)) as aw3:
        heads = await aw3.eth.subscribe("newHeads")
        logs = await aw3.eth.subscribe("logs", {"address": state["minimal"].address})
        want: dict = {heads: None, logs: None}
        try:
            pending = await aw3.eth.subscribe("newPendingTransactions")
            want[pending] = None
        except Exception as e:
            want["newPendingTransactions"] = f"refused: {e}"
        tx = await asyncio.to_thread(lambda: send(emitter, {"to": state["minimal"].address,
                                                            "data": state["minimal"].functions.set(71)._encode_transaction_data()}))

        async def collect():
            async for msg in aw3.socket.process_subscriptions():
                sub, result = msg["subscription"], msg["result"]
                if sub == heads and want[heads] is None:
                    want[heads] = "ok" if "stateRoot" in result else f"bad head {result}"
                elif sub == logs and want[logs] is None:
                    want[logs] = "ok"
                elif sub in want and sub not in (heads, logs) and want[sub] is None:
                    want[sub] = "ok" if bytes(result) == bytes(tx) or result == tx.to_0x_hex() else None
                if all(v is not None for v in want.values()):
                    return

        try:
            await asyncio.wait_for(collect(), 8)
        except TimeoutError:
            pass
        bad = {str(k): v for k, v in want.items() if v != "ok"}
        assert not bad, f"subscriptions without their notification: {bad}"


def subscriptions():
    asyncio.run(_subscriptions())


check("ws_subscriptions_heads_logs_pending", subscriptions, needs=("deploy_minimal",))

# ---- block tags, hash references, proofs ----


def block_tags():
    latest = w3.eth.block_number
    for tag in ("safe", "finalized"):
        b = w3.eth.get_block(tag)
        assert abs(b["number"] - latest) <= 3, (tag, b["number"], latest)
        w3.eth.get_balance(payer.address, tag)
        state["minimal"].functions.value().call(block_identifier=tag)
    assert w3.eth.get_block("earliest")["number"] == 0


def block_hash_reference():
    r = set_value(81)
    set_value(82)
    assert state["minimal"].functions.value().call(block_identifier=r["blockHash"]) == 81
    assert w3.eth.get_balance(emitter.address, block_identifier=r["blockHash"]) > 0


def get_proof():
    block = w3.eth.get_block("latest")
    token = state["token"]
    proof = w3.eth.get_proof(token.address, [2], block["number"])
    leaf = HexaryTrie.get_from_proof(block["stateRoot"], keccak(bytes.fromhex(token.address[2:])),
                                     [rlp.decode(bytes(n)) for n in proof["accountProof"]])
    nonce, balance, storage_root, code_hash = rlp.decode(leaf)
    assert storage_root == bytes(proof["storageHash"]) and code_hash == bytes(proof["codeHash"])
    sp = proof["storageProof"][0]
    value = HexaryTrie.get_from_proof(storage_root, keccak((2).to_bytes(32, "big")),
                                      [rlp.decode(bytes(n)) for n in sp["proof"]])
    proven = int.from_bytes(rlp.decode(value), "big")
    answered = sp["value"] if isinstance(sp["value"], int) else int.from_bytes(bytes(sp["value"]), "big")
    assert proven == answered == 10**24, (proven, answered)


check("block_tags_safe_finalized", block_tags, needs=("deploy_minimal",))
check("block_hash_reference", block_hash_reference, needs=("deploy_minimal",))
check("get_proof_verified", get_proof, needs=("deploy_erc20",))

# ---- methods of the wider API ----


def access_list():
    res = w3.eth.create_access_list({"from": emitter.address, "to": state["minimal"].address,
                                     "data": state["minimal"].functions.set(5)._encode_transaction_data()})
    entry = [a for a in res["accessList"] if a["address"].lower() == state["minimal"].address.lower()]
    assert entry and res["gasUsed"] > 21000, res


def raw_transaction():
    signed = payer.sign_transaction({"chainId": CHAIN_ID, "to": stranger, "value": 5, "gas": 21000, "nonce":
                                     w3.eth.get_transaction_count(payer.address, "pending"),
                                     "maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI})
    h = w3.eth.send_raw_transaction(signed.raw_transaction)
    wait(h)
    assert bytes(w3.eth.get_raw_transaction(h)) == bytes(signed.raw_transaction)


def txpool():
    status = w3.geth.txpool.status()
    assert "pending" in status and "queued" in status, status
    assert "pending" in w3.geth.txpool.content()


def fee_history():
    fh = w3.eth.fee_history(4, "latest", [25, 75])
    assert len(fh["baseFeePerGas"]) == 5 and len(fh["reward"]) == 4


def blob_transaction_refused():
    """A type-3 transaction in its network form (with a blob attached) is refused for its
    type, not for its size: Motus has no blob data."""
    body = [CHAIN_ID, 0, GWEI, 10 * GWEI, 21000, bytes.fromhex(stranger[2:]), 0, b"", [], 10 * GWEI,
            [b"\x01" + b"\x00" * 31], 0, 1, 1]
    blob = b"\x00" * 131072
    raw = b"\x03" + rlp.encode([body, [blob], [b"\xc0" + b"\x00" * 47], [b"\xc0" + b"\x00" * 47]])
    e = expect(Web3RPCError, lambda: w3.eth.send_raw_transaction(raw))
    assert "transaction type not supported" in str(e), e


def indexer_matches_logs_to_transactions():
    """An indexer walks the chain's logs and looks up each one's transaction: every
    transactionHash must name a transaction of that block, or be the zero hash (no
    transaction). Epochs are 10 blocks on this node, so block events (EpochSettled) occur."""
    head = w3.eth.block_number
    logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": head})
    assert logs, "no logs at all"
    settled = 0
    for log_ in logs:
        h = bytes(log_["transactionHash"])
        if h == ZERO_HASH:
            settled += 1
            continue
        tx = w3.eth.get_transaction(h)
        assert tx is not None and tx["blockHash"] == log_["blockHash"], (
            f"log {log_['logIndex']} of block {log_['blockNumber']} names transaction 0x{h.hex()}, "
            "which eth_getTransactionByHash does not know")


check("create_access_list", access_list, needs=("deploy_minimal",))
check("raw_transaction_by_hash", raw_transaction)
check("txpool_status_content", txpool)
check("fee_history", fee_history)
check("blob_transaction_refused_for_its_type", blob_transaction_refused)
check("indexer_matches_logs_to_transactions", indexer_matches_logs_to_transactions)

failed = [n for n, ok in results.items() if not ok]
print(f"{len(results) - len(failed)} passed, {len(failed)} failed", file=sys.stderr)
sys.exit(1 if failed else 0)
