"""Block execution: ``execute_block(db, parent_state_root, env, body) -> BlockResult``.

Order inside a block (docs/protocol.md): (1) epoch boundary work and a bounded slice of
epoch settlement, (2) evidence,
(3) transactions, (4) attestations. The caller compares the result's roots with
the header (``check_result``) and raises :class:`InvalidBlock` on a mismatch.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import rlp
from eth.abc import AtomicDatabaseAPI, ReceiptAPI, SignedTransactionAPI, StateAPI
from eth.exceptions import VMError
from eth.rlp.receipts import Receipt
from eth.vm.forks.cancun import CancunVM
from eth_bloom import BloomFilter
from eth_utils import ValidationError

from vm.attestation import OK, compute_attestation_id, decode_accepted
from vm.attestation_ahead import SignaturesAhead, SignatureWorker
from vm.block import Header, rlp_encode
from vm.cost import BlockCost, CostWeights, settlement_steps_per_block
from vm.epoch import advance_clock, get_epoch
from vm.errors import InvalidBlock, InvalidTransaction
from vm.events import BlockEvent, collect_block_events, record_block_events
from vm.modules import SYSTEM_MODULES, addresses
from vm.modules.params import get_param
from vm.modules.telemetry import DEFERRED, finish_signatures
from vm.modules.validators import active_validators, jail
from vm.params import PARAMS
from vm.sender import recover_sender
from vm.state import BlockEnv, MotusState, make_state
from vm.supply import record_burned_fees
from vm.trie import compute_list_root

ELASTICITY = 2
BASE_FEE_CHANGE_DENOMINATOR = 8
BLOB_TX_TYPE = 3
MAX_TX_BYTES = 128 * 1024
MAX_INITCODE_SIZE = 49_152  # EIP-3860: twice the EIP-170 code size limit
# Block building with a time budget executes attestations in runs of this many, asking
# the budget between runs: small enough to stop near the budget, large enough that the
# per-run write-back of the telemetry view stays a small share.
BUILD_ATTESTATION_RUN = 100
# A block with more attestations than any chain may allow (the parameter's upper bound)
# is refused before any is checked: none of its signatures goes to the worker.
MAX_AHEAD_ATTESTATIONS = PARAMS["max_block_attestations"].maximum


@dataclass(frozen=True)
class Misbehavior:
    """A validator proven to have double-signed (from verified evidence)."""

    validator: bytes
    height: int


@dataclass(frozen=True)
class BlockBody:
    transactions: Sequence[SignedTransactionAPI]
    attestations: Sequence[bytes] = ()
    misbehavior: Sequence[Misbehavior] = ()
    raw_transactions: Sequence[bytes] | None = None  # the envelopes, when the caller has them
    # building only: the attestations' ids (keccak of each), when the caller has them (the
    # node's pool keys its attestations by id); a check computes its own
    attestation_ids: Sequence[bytes] | None = None


@dataclass
class BlockResult:
    state_root: bytes
    receipts: list[ReceiptAPI]
    gas_used: int
    logs_bloom: bytes
    receipts_root: bytes
    transactions_root: bytes
    attestations_root: bytes
    next_validators: list[tuple[bytes, int]]
    epoch: int
    epoch_boundary: bool
    attestation_results: list[Any] = field(default_factory=list)
    tx_gas_used: list[int] = field(default_factory=list)
    contract_addresses: list[bytes | None] = field(default_factory=list)
    transactions: list[SignedTransactionAPI] = field(default_factory=list)
    encoded_receipts: list[bytes] = field(default_factory=list)
    raw_transactions: list[bytes] = field(default_factory=list)
    attestations: list[bytes] = field(default_factory=list)
    # logs of the epoch work, outside any transaction (vm.events); committed by the state root
    block_events: list[BlockEvent] = field(default_factory=list)
    cost: int = 0  # the block's deterministic cost (vm/cost.py)
    # checking with a signature worker (vm.attestation_ahead): attestations whose
    # signature it recovered, and the wall time execution waited for its answers
    worker_signatures: int = 0
    unseen_signatures: int = 0  # attestations not verified at admission (with a worker)
    worker_wait_s: float = 0.0
    # building only: the included attestations decoded (vm.attestation.Attestation), in
    # order, what a commit reads of them (None: not at hand, decode ``attestations``)
    attestation_records: list[Any] | None = None
    included_ids: list[bytes] | None = None  # included_attestation_ids(), once asked

    def included_attestation_ids(self) -> list[bytes]:
        """Ids of the included attestations, in order: execution hashed them already (its
        results pair each id with ``ok`` exactly for the included ones); hashed again
        only if the results do not line up with the included list."""
        ids = self.included_ids
        if ids is None or len(ids) != len(self.attestations):
            ids = [att_id for att_id, code in self.attestation_results if code == OK]
            if len(ids) != len(self.attestations):
                ids = [compute_attestation_id(bytes(a)) for a in self.attestations]
            self.included_ids = ids  # (a commit asks three times)
        return ids

    def decoded_attestations(self) -> list[Any]:
        """The included attestations decoded (:func:`vm.attestation.decode_accepted`, for
        executed, so valid, bytes): ``attestation_records``, decoded and kept once if the
        result does not have them (a commit reads them for the explorer's cells, the
        pool's tracks and the signal store's notes)."""
        records = self.attestation_records
        if records is None or len(records) != len(self.attestations):
            records = self.attestation_records = list(map(decode_accepted, self.attestations))
        return records


def compute_base_fee(parent_gas_used: int, parent_gas_limit: int, parent_base_fee: int, floor: int) -> int:
    """EIP-1559 base fee of the next block, never below ``floor``."""
    target = parent_gas_limit // ELASTICITY
    if target == 0 or parent_gas_used == target:
        fee = parent_base_fee
    elif parent_gas_used > target:
        delta = max(parent_base_fee * (parent_gas_used - target) // target // BASE_FEE_CHANGE_DENOMINATOR, 1)
        fee = parent_base_fee + delta
    else:
        delta = parent_base_fee * (target - parent_gas_used) // target // BASE_FEE_CHANGE_DENOMINATOR
        fee = parent_base_fee - delta
    return max(fee, floor)


def check_transaction(state: StateAPI, tx: SignedTransactionAPI, env: BlockEnv, gas_available: int,
                      raw: bytes | None = None) -> bytes:
    """Checks a transaction must pass before it is applied; raises InvalidTransaction
    with a stable code, else returns the sender. With the envelope ``raw`` the sender
    is recovered from it (:mod:`vm.sender`, the fast path)."""
    if getattr(tx, "type_id", None) == BLOB_TX_TYPE:
        raise _tx_error("unsupported_type", "blob transactions are not supported on Motus")
    if tx.chain_id is None:
        raise _tx_error("wrong_chain_id", "pre-EIP-155 transactions (no chain id) are refused")
    if tx.chain_id != env.chain_id:
        raise _tx_error("wrong_chain_id", f"chain id {tx.chain_id}, this chain is {env.chain_id}")
    if tx.gas > gas_available:
        raise _tx_error("gas_limit_exceeded", f"gas {tx.gas} exceeds the {gas_available} left in the block")
    if tx.max_fee_per_gas < env.base_fee_per_gas:
        raise _tx_error("fee_too_low", f"max fee per gas {tx.max_fee_per_gas} below base fee {env.base_fee_per_gas}")
    if tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
        raise _tx_error("fee_too_low", "priority fee above max fee")
    try:
        # field validation itself is py-evm's, inside apply_transaction
        sender = recover_sender(raw, tx) if raw is not None else tx.sender
    except Exception as exc:
        raise _tx_error("bad_signature", f"invalid transaction: {exc}") from None
    nonce = state.get_nonce(sender)
    if tx.nonce < nonce:
        raise _tx_error("nonce_too_low", f"nonce {tx.nonce} below account nonce {nonce}")
    if tx.nonce > nonce:
        raise _tx_error("nonce_too_high", f"nonce {tx.nonce} above account nonce {nonce}")
    cost = tx.value + tx.gas * tx.max_fee_per_gas
    if state.get_balance(sender) < cost:
        raise _tx_error("insufficient_funds", f"balance below value + gas * max fee ({cost} wei)")
    if tx.intrinsic_gas > tx.gas:
        raise _tx_error("intrinsic_gas", f"gas {tx.gas} below intrinsic gas {tx.intrinsic_gas}")
    if not tx.to and len(tx.data) > MAX_INITCODE_SIZE:
        # EIP-3860: such a creation is invalid; py-evm raises OutOfGas out of
        # apply_transaction for it, which no caller expects
        raise _tx_error("initcode_too_large", initcode_too_large_message(len(tx.data)))
    return sender


def initcode_too_large_message(size: int) -> str:
    """geth's words for ErrMaxInitCodeSizeExceeded."""
    return f"max initcode size exceeded: code size {size} limit {MAX_INITCODE_SIZE}"


def _tx_error(code: str, message: str) -> InvalidTransaction:
    err = InvalidTransaction(message)
    err.code = code
    return err


def apply_transaction(state: MotusState, tx: SignedTransactionAPI, gas_used_before: int) -> tuple[ReceiptAPI, Any]:
    state.lock_changes()
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(tx)
    except (ValidationError, VMError) as exc:  # py-evm's own checks, after ours: treat alike
        # A VMError escapes apply_transaction only from checks made after the fee was
        # taken and the nonce bumped (e.g. EIP-3860's initcode size): undo them, or a
        # builder that skips the transaction would build on a state nobody else computes.
        state.revert(snapshot)
        raise _tx_error("invalid", str(exc)) from None
    receipt = CancunVM.make_receipt(_GasHeader(gas_used_before), tx, computation, state)  # type: ignore[arg-type]
    return receipt, computation


class _GasHeader:
    """make_receipt only reads ``gas_used`` of the header it is given."""

    __slots__ = ("gas_used",)

    def __init__(self, gas_used: int) -> None:
        self.gas_used = gas_used


def encode_receipt(receipt: ReceiptAPI) -> bytes:
    """The receipt's consensus encoding (``type || rlp(receipt)`` for typed ones), what
    py-evm's ``encode`` gives, without its sedes machinery for the receipt shapes
    execution makes (tests/vm/test_execute.py compares the two)."""
    inner = getattr(receipt, "_inner", None)
    if type(inner) is Receipt:
        return bytes((receipt.type_id,)) + _encode_plain_receipt(inner)  # type: ignore[attr-defined]
    if type(receipt) is Receipt:
        return _encode_plain_receipt(receipt)
    enc = getattr(receipt, "encode", None)
    return enc() if enc is not None else rlp.encode(receipt)


def _encode_plain_receipt(r: Receipt) -> bytes:
    gas = r.gas_used
    return rlp_encode([
        r.state_root, gas.to_bytes((gas.bit_length() + 7) // 8, "big"), r.bloom.to_bytes(256, "big"),
        [[log.address, [t.to_bytes(32, "big") for t in log.topics], log.data] for log in r.logs],
    ])


def encode_transaction(tx: SignedTransactionAPI) -> bytes:
    enc = getattr(tx, "encode", None)
    return enc() if enc is not None else rlp.encode(tx)


def begin_block(state: MotusState, env: BlockEnv,
                misbehavior: Sequence[Misbehavior]) -> tuple[list[BlockEvent], bool, int]:
    """Steps (1) and (2), what runs before a block's transactions: the epoch boundary work
    and this block's slice of epoch settlement (whose events are the block's events), and
    the evidence. Returns (events, boundary, settlement steps done). Also what a trace
    replays before the block's transactions (node/rpc/debug.py)."""
    # (1) epoch boundary; what the hooks emit are the block's events
    with collect_block_events() as block_events:
        boundary = advance_clock(state, env.height)
        for module in SYSTEM_MODULES.values():
            module.begin_block(state, env, boundary)
        # then every block does a bounded slice of the modules' metered work (the epoch
        # settlement), with the weights the block's cost is counted with (read after the
        # hooks, as below); the budget is shared in module order
        budget = settlement_steps_per_block(state)
        steps = 0
        for module in SYSTEM_MODULES.values():
            if steps >= budget:
                break
            steps += module.metered_work(state, budget - steps)

    # (2) evidence
    for m in misbehavior:
        jail(state, m.validator)
    return block_events, boundary, steps


def execute_block(db: AtomicDatabaseAPI, parent_state_root: bytes, env: BlockEnv, body: BlockBody,
                  *, skip_invalid: bool = False,
                  should_stop: Callable[[str], bool] | None = None,
                  signature_worker: SignatureWorker | None = None) -> BlockResult:
    """Execute a block body on the parent state; persist trie nodes into ``db``.

    With ``skip_invalid`` (block building) transactions and attestations that fail
    their checks, or would take the block over ``max_block_cost`` (vm/cost.py), are
    left out and the included ones returned; once ``should_stop(kind)`` (the builder's
    time budget, asked between items with ``kind`` "transactions" or "attestations")
    is true the rest of that kind are left out too, though never the first one tried,
    so a slow moment cannot starve the chain. Otherwise
    (block checking) any invalid item raises :class:`InvalidBlock`, and a block over
    its cost :class:`BlockTooCostly` as soon as the running cost passes the cap. The
    result lists the transactions and attestations that were included.

    With a ``signature_worker``, checking a block recovers the signatures of the
    attestations this process has not verified yet on that worker process, beside
    execution (:class:`vm.attestation_ahead.SignaturesAhead`); the result, and the error
    of an invalid block, are the same as without it.
    """
    ahead = None
    if (signature_worker is not None and not skip_invalid
            and 0 < len(body.attestations) <= MAX_AHEAD_ATTESTATIONS):
        ahead = SignaturesAhead(signature_worker, body.attestations, env.chain_id)
    try:
        result = _execute_block_gc_paused(db, parent_state_root, env, body, skip_invalid,
                                          should_stop, ahead)
    finally:
        if ahead is not None:
            ahead.close()  # also after a failed block: the worker is free again
    if ahead is not None:
        result.worker_signatures, result.worker_wait_s = ahead.workers_checked, ahead.waited_s
        result.unseen_signatures = ahead.unseen
    return result


def _execute_block_gc_paused(db: AtomicDatabaseAPI, parent_state_root: bytes, env: BlockEnv,
                             body: BlockBody, skip_invalid: bool,
                             should_stop: Callable[[str], bool] | None,
                             ahead: SignaturesAhead | None) -> BlockResult:
    # Python's cyclic garbage collector paused while the block runs: a block allocates
    # hundreds of thousands of short-lived objects, which would trigger collections that
    # traverse the node's whole heap (caches, pools) several times a block. Reference
    # counting still frees nearly everything at once; the few cycles are collected at the
    # next collection after the block. Results do not depend on it.
    if not gc.isenabled():
        return _execute_block(db, parent_state_root, env, body, skip_invalid=skip_invalid,
                              should_stop=should_stop, ahead=ahead)
    gc.disable()
    try:
        return _execute_block(db, parent_state_root, env, body, skip_invalid=skip_invalid,
                              should_stop=should_stop, ahead=ahead)
    finally:
        gc.enable()


def _execute_block(db: AtomicDatabaseAPI, parent_state_root: bytes, env: BlockEnv, body: BlockBody,
                   *, skip_invalid: bool = False,
                   should_stop: Callable[[str], bool] | None = None,
                   ahead: SignaturesAhead | None = None) -> BlockResult:
    """What :func:`execute_block` does, garbage collection aside."""
    state = make_state(db, parent_state_root, env)
    block_events, boundary, settle_steps = begin_block(state, env, body.misbehavior)
    cost = BlockCost(CostWeights.of(state))
    cost.add_settlement(settle_steps)  # before any transaction: the room left is what they get

    # (3) transactions
    receipts: list[ReceiptAPI] = []
    included: list[SignedTransactionAPI] = []
    raws = body.raw_transactions
    included_raw: list[bytes] = []
    tx_gas: list[int] = []
    created: list[bytes | None] = []
    gas_used = 0
    for index, tx in enumerate(body.transactions):
        if skip_invalid and should_stop is not None and index and should_stop("transactions"):
            break
        try:
            sender = check_transaction(state, tx, env, env.gas_limit - gas_used,
                                       raws[index] if raws is not None else None)
            if skip_invalid and cost.transaction_bound(tx, sender) > cost.room:
                continue  # might take the block over its cost: left for a later block
            receipt, computation = apply_transaction(state, tx, gas_used)
        except InvalidTransaction as exc:
            if skip_invalid:
                continue
            raise InvalidBlock(f"transaction {index}: {exc.code}: {exc}") from None
        contract = computation.msg.storage_address if computation.msg.is_create else None
        cost.add_transaction(tx, sender, receipt.gas_used - gas_used, contract,
                             len(state.get_code(contract)) if contract is not None else 0)
        tx_gas.append(receipt.gas_used - gas_used)
        gas_used = receipt.gas_used
        receipts.append(receipt)
        included.append(tx)
        included_raw.append(raws[index] if raws is not None else encode_transaction(tx))
        created.append(contract)

    # EIP-1559: the base fee is burned (priority fees went to the proposer)
    if gas_used:
        record_burned_fees(state, gas_used * env.base_fee_per_gas)

    # (4) attestations
    telemetry = SYSTEM_MODULES.get(addresses.TELEMETRY)
    attestations = list(body.attestations)
    att_results: list[Any] = []
    records: list[Any] | None = None
    if attestations:
        if len(attestations) > get_param(state, "max_block_attestations") and not skip_invalid:
            raise InvalidBlock("too many attestations in block")
        if telemetry is None or not hasattr(telemetry, "process_attestations"):
            raise InvalidBlock("attestations are not accepted by this chain version")
        if skip_invalid:
            ids = body.attestation_ids
            if ids is not None and len(ids) != len(attestations):
                ids = None  # (not the ids of these attestations: hashed here)
            attestations, att_results, records = _build_attestations(
                state, env, telemetry, attestations, cost, should_stop, ids)
        else:
            cost.add_attestations(len(attestations))  # known before executing any of them
            attestations, att_results = telemetry.process_attestations(
                state, env, attestations, ahead=ahead, finish=False)

    record_block_events(state, env.height, block_events)
    state.persist()
    if ahead is not None:
        # The signatures the loop applied unverified, settled now that the state root is
        # written: the worker recovered them meanwhile (a forged one fails the block, and
        # the state built on it is thrown away with it).
        finish_signatures(ahead)
    bloom = BloomFilter()
    for r in receipts:
        for log in r.logs:
            bloom.add(log.address)
            for topic in log.topics:
                bloom.add(topic.to_bytes(32, "big") if isinstance(topic, int) else topic)
    result = BlockResult(
        state_root=state.state_root,
        receipts=receipts,
        gas_used=gas_used,
        logs_bloom=int(bloom).to_bytes(256, "big"),
        receipts_root=compute_list_root(encoded_receipts := [encode_receipt(r) for r in receipts]),
        transactions_root=compute_list_root(included_raw),
        attestations_root=compute_list_root(list(attestations)),
        next_validators=active_validators(state),
        epoch=get_epoch(state),
        epoch_boundary=boundary,
        attestation_results=att_results,
        tx_gas_used=tx_gas,
        contract_addresses=created,
        transactions=included,
        encoded_receipts=encoded_receipts,
        raw_transactions=included_raw,
        attestations=list(attestations),
        block_events=block_events,
        cost=cost.total,
        attestation_records=records,
    )
    return result


def _build_attestations(state: MotusState, env: BlockEnv, telemetry: Any, attestations: list[bytes],
                        cost: BlockCost, should_stop: Callable[[str], bool] | None,
                        ids: Sequence[bytes] | None = None,
                        ) -> tuple[list[bytes], list[Any], list[Any]]:
    """Block building's step (4): as many attestations as the block's cost leaves room
    for, through one telemetry view (``build_attestations``), the time budget asked
    between runs of BUILD_ATTESTATION_RUN; the rest are deferred (one result per input,
    in order, as ``process_attestations`` gives), and the included ones decoded.
    ``ids``: the attestations' ids when the caller has them (the pool's keys)."""
    todo = attestations[:cost.attestations_that_fit(len(attestations))]
    stop = None if should_stop is None else (lambda: should_stop("attestations"))
    included, results, done, records = telemetry.build_attestations(
        state, env, todo, stop, BUILD_ATTESTATION_RUN,
        None if ids is None else ids[:len(todo)])
    cost.add_attestations(len(included))  # fits: the included are among those that fit
    rest = attestations[done:]
    rest_ids = (map(compute_attestation_id, map(bytes, rest)) if ids is None
                else ids[done:len(attestations)])
    results.extend((att_id, DEFERRED) for att_id in rest_ids)
    return included, results, records


def check_result(header: Header, result: BlockResult, validators_hash_of) -> None:
    """Compare an executed block's results with its header, as execution-specs does."""
    checks = [
        ("state_root", header.state_root, result.state_root),
        ("transactions_root", header.transactions_root, result.transactions_root),
        ("receipts_root", header.receipts_root, result.receipts_root),
        ("attestations_root", header.attestations_root, result.attestations_root),
        ("logs_bloom", header.logs_bloom, result.logs_bloom),
        ("gas_used", header.gas_used, result.gas_used),
        ("next_validators_hash", header.next_validators_hash, validators_hash_of(result.next_validators)),
    ]
    for name, expected, got in checks:
        if expected != got:
            raise InvalidBlock(f"{name} mismatch: header has {_show(expected)}, execution gives {_show(got)}")


def _show(v: Any) -> str:
    return "0x" + v.hex() if isinstance(v, bytes) else str(v)


def receipt_status(receipt: ReceiptAPI) -> int:
    """1 for success, 0 for failure (EIP-658 status, kept in py-evm's ``state_root`` field)."""
    return 1 if receipt.state_root == b"\x01" else 0
