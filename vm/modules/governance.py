"""Governance module: token holders lock MOTUS for voting power, propose changes with a
deposit, vote, and passed changes take effect at an epoch boundary (docs/governance.md,
documented in docs/governance.md).

The module's account balance holds every locked, unlocking and deposited token; tokens
leave it only by ``withdraw`` (to the owner), a deposit refund (to the proposer) or a
veto burn (to nobody, recorded by :func:`vm.supply.record_burned_deposit`).

Storage layout (Solidity-style, at :data:`vm.modules.addresses.GOVERNANCE`):

- slot 0: proposal count (ids start at 1); slot 1: total locked (voting power of all);
  slot 2: lowest proposal id that may still need a tally or an activation.
- ``mapping_slot(10, account)`` + 0 locked, + 1 pending unlock, + 2 release block,
  + 3 frozen until (end block of the latest-ending proposal the account voted on).
- ``mapping_slot(11, id)`` + 0 kind, + 1 proposer, + 2 deposit, + 3 status,
  + 4 start block, + 5 voting end block, + 6 executable at, + 7..10 yes/no/abstain/veto,
  + 11 target address, + 12 value, + 13 flag, + 14 name (bytes), + 15 description
  (bytes), + 16 tallied at, + 17 total locked at tally, + 18 executed at,
  + 19 note (bytes: why an activation failed).
- ``mapping_slot(12, id, voter)`` + 0 option, + 1 weight.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth.abc import StateAPI
from eth_typing import Address

from vm import supply  # module import: vm.supply imports vm.modules (cycle)
from vm.modules import addresses
from vm.modules.base import Call, ModuleRevert, Store, SystemModule, mapping_slot
from vm.modules.params import get_param, set_param
from vm.modules.validators import active_validators, set_power
from vm.params import PARAMS, check_param

BPS = 10_000
ZERO_ADDRESS = b"\x00" * 20

# proposal kinds
KIND_PARAM = 1
KIND_MANUFACTURER = 2
KIND_DENY = 3
KIND_VALIDATOR = 4
KIND_NAMES = {KIND_PARAM: "param", KIND_MANUFACTURER: "manufacturer", KIND_DENY: "deny",
              KIND_VALIDATOR: "validator"}

# proposal status
STATUS_VOTING = 1
STATUS_PASSED = 2  # passed, waiting for its activation epoch boundary
STATUS_EXECUTED = 3
STATUS_REJECTED = 4
STATUS_NO_QUORUM = 5
STATUS_VETOED = 6
STATUS_FAILED = 7  # passed, but could not be applied at activation (see note)
STATUS_NAMES = {STATUS_VOTING: "voting", STATUS_PASSED: "passed", STATUS_EXECUTED: "executed",
                STATUS_REJECTED: "rejected", STATUS_NO_QUORUM: "no_quorum", STATUS_VETOED: "vetoed",
                STATUS_FAILED: "failed"}
OPEN_STATUSES = (STATUS_VOTING, STATUS_PASSED)

# vote options
OPTION_YES = 1
OPTION_NO = 2
OPTION_ABSTAIN = 3
OPTION_VETO = 4
OPTION_NAMES = {OPTION_YES: "yes", OPTION_NO: "no", OPTION_ABSTAIN: "abstain", OPTION_VETO: "veto"}

MAX_VALIDATOR_POWER = 10**12
MAX_DESCRIPTION_BYTES = 1_024
MAX_NAME_BYTES = 64

# storage
S_COUNT = 0
S_TOTAL_LOCKED = 1
S_FIRST_OPEN = 2
M_ACCOUNT = 10
M_PROPOSAL = 11
M_VOTE = 12

# account struct fields
A_LOCKED, A_PENDING, A_RELEASE, A_FROZEN = range(4)
# proposal struct fields
(P_KIND, P_PROPOSER, P_DEPOSIT, P_STATUS, P_START, P_END, P_EXECUTABLE, P_YES, P_NO, P_ABSTAIN,
 P_VETO, P_TARGET, P_VALUE, P_FLAG, P_NAME, P_DESCRIPTION, P_TALLIED, P_LOCKED_AT_TALLY,
 P_EXECUTED, P_NOTE) = range(20)
TALLY_FIELDS = {OPTION_YES: P_YES, OPTION_NO: P_NO, OPTION_ABSTAIN: P_ABSTAIN, OPTION_VETO: P_VETO}


@dataclass(frozen=True)
class LockRecord:
    locked: int  # counts as voting power
    pending_unlock: int  # unlocked, waiting for release_block; no voting power
    release_block: int
    frozen_until: int  # unlock refused before this block (open proposals voted on)


@dataclass(frozen=True)
class Vote:
    option: int
    weight: int

    @property
    def option_name(self) -> str:
        return OPTION_NAMES.get(self.option, "none")


@dataclass(frozen=True)
class Proposal:
    id: int
    kind: str  # param | manufacturer | deny | validator
    proposer: bytes
    deposit: int
    status: str  # voting | passed | executed | rejected | no_quorum | vetoed | failed
    critical: bool
    start_block: int
    voting_end_block: int
    executable_at: int  # 0 until passed; applied at the first epoch boundary at or after it
    yes: int
    no: int
    abstain: int
    veto: int
    target: bytes  # manufacturer / device / validator address (zero for param proposals)
    value: int  # parameter value or validator power
    flag: bool  # licensed / denied
    name: str  # parameter name or manufacturer name
    description: str
    tallied_at: int
    locked_at_tally: int
    executed_at: int
    note: str


# --- Python read API (the node serves these over RPC) -------------------------

def _store(state: StateAPI) -> Store:
    return Store(state, addresses.GOVERNANCE)


def locked_amount(state: StateAPI, account: bytes) -> int:
    """MOTUS ``account`` has locked (excluding amounts waiting to be released)."""
    return _store(state).load(mapping_slot(M_ACCOUNT, account) + A_LOCKED)


def voting_power(state: StateAPI, account: bytes) -> int:
    """Weight a vote by ``account`` would carry now: its locked amount."""
    return locked_amount(state, account)


def total_locked(state: StateAPI) -> int:
    return _store(state).load(S_TOTAL_LOCKED)


def get_lock(state: StateAPI, account: bytes) -> LockRecord:
    st = _store(state)
    base = mapping_slot(M_ACCOUNT, account)
    return LockRecord(st.load(base + A_LOCKED), st.load(base + A_PENDING), st.load(base + A_RELEASE),
                      st.load(base + A_FROZEN))


def proposal_count(state: StateAPI) -> int:
    return _store(state).load(S_COUNT)


def get_proposal(state: StateAPI, proposal_id: int) -> Proposal | None:
    """The proposal with this id, or None if there is none."""
    st = _store(state)
    if not 1 <= proposal_id <= st.load(S_COUNT):
        return None
    base = mapping_slot(M_PROPOSAL, proposal_id)
    kind = st.load(base + P_KIND)
    name = st.load_bytes(base + P_NAME).decode("utf-8", "replace")
    return Proposal(
        id=proposal_id,
        kind=KIND_NAMES.get(kind, str(kind)),
        proposer=st.load_address(base + P_PROPOSER),
        deposit=st.load(base + P_DEPOSIT),
        status=STATUS_NAMES.get(st.load(base + P_STATUS), "unknown"),
        critical=is_critical(kind, name),
        start_block=st.load(base + P_START),
        voting_end_block=st.load(base + P_END),
        executable_at=st.load(base + P_EXECUTABLE),
        yes=st.load(base + P_YES),
        no=st.load(base + P_NO),
        abstain=st.load(base + P_ABSTAIN),
        veto=st.load(base + P_VETO),
        target=st.load_address(base + P_TARGET),
        value=st.load(base + P_VALUE),
        flag=bool(st.load(base + P_FLAG)),
        name=name,
        description=st.load_bytes(base + P_DESCRIPTION).decode("utf-8", "replace"),
        tallied_at=st.load(base + P_TALLIED),
        locked_at_tally=st.load(base + P_LOCKED_AT_TALLY),
        executed_at=st.load(base + P_EXECUTED),
        note=st.load_bytes(base + P_NOTE).decode("utf-8", "replace"),
    )


def list_proposals(state: StateAPI, status: str | None = None, start_id: int = 1,
                   limit: int = 100) -> list[Proposal]:
    """Proposals with id >= ``start_id`` in id order, at most ``limit``, optionally only
    those with ``status`` (a name from :data:`STATUS_NAMES`)."""
    if status is not None and status not in STATUS_NAMES.values():
        raise ValueError(f"unknown proposal status {status!r}")
    out: list[Proposal] = []
    for pid in range(max(1, start_id), proposal_count(state) + 1):
        if len(out) >= limit:
            break
        p = get_proposal(state, pid)
        if p is not None and (status is None or p.status == status):
            out.append(p)
    return out


def get_vote(state: StateAPI, proposal_id: int, voter: bytes) -> Vote | None:
    st = _store(state)
    base = mapping_slot(M_VOTE, proposal_id, voter)
    option = st.load(base)
    return Vote(option, st.load(base + 1)) if option else None


def is_critical(kind: int, name: str) -> bool:
    """Critical class (2/3 threshold): validator-set changes and parameters marked
    critical in :mod:`vm.params` (issuance, decay, epoch length, governance)."""
    if kind == KIND_VALIDATOR:
        return True
    spec = PARAMS.get(name) if kind == KIND_PARAM else None
    return bool(spec and spec.critical)


# --- tally and activation (block execution, no transaction) -------------------

def compute_tally_status(yes: int, no: int, abstain: int, veto: int, locked: int, critical: bool,
                         params: dict[str, int]) -> int:
    """Outcome of a finished vote. In order: quorum (votes cast * 10000 >= quorum_bps *
    locked supply, and at least one vote) else NO_QUORUM; veto (veto * 10000 >
    veto_bps * votes cast) else VETOED; threshold (yes * 10000 > threshold_bps *
    (yes + no + veto)) PASSED else REJECTED."""
    cast = yes + no + abstain + veto
    if cast == 0 or cast * BPS < params["gov_quorum_bps"] * locked:
        return STATUS_NO_QUORUM
    if veto * BPS > params["gov_veto_bps"] * cast:
        return STATUS_VETOED
    threshold = params["gov_critical_threshold_bps"] if critical else params["gov_threshold_bps"]
    if yes * BPS > threshold * (yes + no + veto):
        return STATUS_PASSED
    return STATUS_REJECTED


Emit = Callable[..., None]


def process_block(state: StateAPI, height: int, epoch_boundary: bool, emit: Emit | None = None) -> None:
    """Tally every proposal whose voting period ended (``height >= voting_end_block``),
    and, at an epoch boundary, apply every passed proposal whose execution delay is
    over (``height >= executable_at``), in id order. ``emit(event, *args)``, when given,
    announces each tally (``ProposalTallied``, then ``DepositBurned`` or
    ``DepositRefunded``) and activation (``ProposalExecuted`` or ``ProposalFailed``)."""
    st = _store(state)
    count = st.load(S_COUNT)
    if count == 0:
        return
    first = max(1, st.load(S_FIRST_OPEN))
    new_first = 0
    for pid in range(first, count + 1):
        base = mapping_slot(M_PROPOSAL, pid)
        status = st.load(base + P_STATUS)
        if status == STATUS_VOTING and height >= st.load(base + P_END):
            status = _process_tally(state, st, pid, height, emit)
        if status == STATUS_PASSED and epoch_boundary and height >= st.load(base + P_EXECUTABLE):
            status = _process_activation(state, st, pid, height, emit)
        if status in OPEN_STATUSES and new_first == 0:
            new_first = pid
    st.store(S_FIRST_OPEN, new_first or count + 1)


def _process_tally(state: StateAPI, st: Store, pid: int, height: int, emit: Emit | None) -> int:
    base = mapping_slot(M_PROPOSAL, pid)
    params = {n: get_param(state, n) for n in ("gov_quorum_bps", "gov_veto_bps", "gov_threshold_bps",
                                               "gov_critical_threshold_bps", "gov_execution_delay_blocks")}
    locked = st.load(S_TOTAL_LOCKED)
    kind = st.load(base + P_KIND)
    critical = is_critical(kind, st.load_bytes(base + P_NAME).decode("utf-8", "replace"))
    yes, no, abstain, veto = (st.load(base + f) for f in (P_YES, P_NO, P_ABSTAIN, P_VETO))
    status = compute_tally_status(yes, no, abstain, veto, locked, critical, params)
    deposit = st.load(base + P_DEPOSIT)
    proposer = st.load_address(base + P_PROPOSER)
    state.delta_balance(Address(addresses.GOVERNANCE), -deposit)
    if status == STATUS_VETOED:
        supply.record_burned_deposit(state, deposit)
    else:
        state.delta_balance(Address(proposer), deposit)
    if emit is not None:
        emit("ProposalTallied", pid, status, yes, no, abstain, veto)
        emit("DepositBurned" if status == STATUS_VETOED else "DepositRefunded", pid, proposer, deposit)
    if status == STATUS_PASSED:
        st.store(base + P_EXECUTABLE, height + params["gov_execution_delay_blocks"])
    st.store(base + P_STATUS, status)
    st.store(base + P_TALLIED, height)
    st.store(base + P_LOCKED_AT_TALLY, locked)
    return status


def _process_activation(state: StateAPI, st: Store, pid: int, height: int, emit: Emit | None) -> int:
    base = mapping_slot(M_PROPOSAL, pid)
    kind = st.load(base + P_KIND)
    target = st.load_address(base + P_TARGET)
    value = st.load(base + P_VALUE)
    flag = bool(st.load(base + P_FLAG))
    name = st.load_bytes(base + P_NAME).decode("utf-8", "replace")
    try:
        if kind == KIND_PARAM:
            set_param(state, name, value)
        elif kind == KIND_VALIDATOR:
            _check_validator_change(state, target, value)
            set_power(state, target, value)
        elif kind == KIND_MANUFACTURER:
            importlib.import_module("vm.modules.identity").set_manufacturer(state, target, flag, name)
        elif kind == KIND_DENY:
            importlib.import_module("vm.modules.telemetry").set_denied(state, target, flag)
        else:
            raise ValueError(f"unknown proposal kind {kind}")
    except (ValueError, ModuleRevert, ImportError, AttributeError) as exc:
        note = str(getattr(exc, "reason", exc)).encode()[:256]
        st.store_bytes(base + P_NOTE, note)
        st.store(base + P_STATUS, STATUS_FAILED)
        st.store(base + P_EXECUTED, height)
        if emit is not None:
            emit("ProposalFailed", pid, note.decode("utf-8", "replace"))
        return STATUS_FAILED
    st.store(base + P_STATUS, STATUS_EXECUTED)
    st.store(base + P_EXECUTED, height)
    if emit is not None:
        emit("ProposalExecuted", pid)
    return STATUS_EXECUTED


def _check_validator_change(state: StateAPI, validator: bytes, power: int) -> None:
    """Bounds of a validator-set change; raises ModuleRevert with the reason."""
    if validator == ZERO_ADDRESS:
        raise ModuleRevert("validator address must not be zero")
    if power > MAX_VALIDATOR_POWER:
        raise ModuleRevert(f"validator power {power} above the maximum {MAX_VALIDATOR_POWER}")
    if power == 0:
        active = dict(active_validators(state))
        if validator not in active:
            raise ModuleRevert("cannot remove a validator that is not in the active set")
        if len(active) == 1:
            raise ModuleRevert("cannot remove the last active validator")


# --- the precompile -------------------------------------------------------------

class GovernanceModule(SystemModule):
    name = "governance"
    address = addresses.GOVERNANCE

    # locking

    def lock(self, call: Call) -> None:
        call.require(call.value > 0, "lock needs a value: send the MOTUS to lock with the call")
        base = mapping_slot(M_ACCOUNT, call.sender)
        locked = call.store.load(base + A_LOCKED) + call.value
        call.store.store(base + A_LOCKED, locked)
        call.store.store(S_TOTAL_LOCKED, call.store.load(S_TOTAL_LOCKED) + call.value)
        call.emit("Locked", call.sender, call.value, locked)

    def unlock(self, call: Call, amount: int) -> None:
        base = mapping_slot(M_ACCOUNT, call.sender)
        locked = call.store.load(base + A_LOCKED)
        call.require(amount > 0, "unlock amount must be positive")
        call.require(amount <= locked, f"unlock amount {amount} exceeds locked {locked}")
        frozen = call.store.load(base + A_FROZEN)
        call.require(call.block_number >= frozen,
                     f"locked tokens are frozen until block {frozen}: they voted on a proposal still open")
        release = call.block_number + get_param(call.state, "gov_unlock_delay_blocks")
        call.store.store(base + A_LOCKED, locked - amount)
        call.store.store(base + A_PENDING, call.store.load(base + A_PENDING) + amount)
        call.store.store(base + A_RELEASE, release)
        call.store.store(S_TOTAL_LOCKED, call.store.load(S_TOTAL_LOCKED) - amount)
        call.emit("UnlockRequested", call.sender, amount, release)

    def withdraw(self, call: Call) -> int:
        base = mapping_slot(M_ACCOUNT, call.sender)
        pending = call.store.load(base + A_PENDING)
        call.require(pending > 0, "nothing to withdraw: call unlock(amount) first")
        release = call.store.load(base + A_RELEASE)
        call.require(call.block_number >= release, f"unlocked tokens are released at block {release}")
        call.store.store(base + A_PENDING, 0)
        call.state.delta_balance(Address(self.address), -pending)
        call.state.delta_balance(Address(call.sender), pending)
        call.emit("Withdrawn", call.sender, pending)
        return pending

    # proposals

    def proposeParam(self, call: Call, name: str, value: int, description: str) -> int:
        call.require(name in PARAMS, f"unknown parameter {name!r}")
        try:
            check_param(name, value)
        except ValueError as exc:
            raise ModuleRevert(f"value out of bounds: {exc}") from None
        return self._propose(call, KIND_PARAM, ZERO_ADDRESS, value, False, name, description)

    def proposeManufacturer(self, call: Call, manufacturer: str, licensed: bool, name: str,
                            description: str) -> int:
        target = _address(manufacturer)
        call.require(target != ZERO_ADDRESS, "manufacturer address must not be zero")
        call.require(len(name.encode()) <= MAX_NAME_BYTES, f"name longer than {MAX_NAME_BYTES} bytes")
        return self._propose(call, KIND_MANUFACTURER, target, 0, licensed, name, description)

    def proposeDeny(self, call: Call, device: str, denied: bool, description: str) -> int:
        target = _address(device)
        call.require(target != ZERO_ADDRESS, "device address must not be zero")
        return self._propose(call, KIND_DENY, target, 0, denied, "", description)

    def proposeValidator(self, call: Call, validator: str, power: int, description: str) -> int:
        target = _address(validator)
        _check_validator_change(call.state, target, power)
        return self._propose(call, KIND_VALIDATOR, target, power, False, "", description)

    def _propose(self, call: Call, kind: int, target: bytes, value: int, flag: bool, name: str,
                 description: str) -> int:
        min_deposit = get_param(call.state, "gov_min_deposit")
        call.require(call.value >= min_deposit, f"deposit {call.value} below the minimum {min_deposit}")
        desc = description.encode()
        call.require(len(desc) <= MAX_DESCRIPTION_BYTES,
                     f"description longer than {MAX_DESCRIPTION_BYTES} bytes")
        st = call.store
        pid = st.load(S_COUNT) + 1
        end = call.block_number + get_param(call.state, "gov_voting_period_blocks")
        base = mapping_slot(M_PROPOSAL, pid)
        st.store(S_COUNT, pid)
        if st.load(S_FIRST_OPEN) == 0:
            st.store(S_FIRST_OPEN, pid)
        st.store(base + P_KIND, kind)
        st.store_address(base + P_PROPOSER, call.sender)
        st.store(base + P_DEPOSIT, call.value)
        st.store(base + P_STATUS, STATUS_VOTING)
        st.store(base + P_START, call.block_number)
        st.store(base + P_END, end)
        st.store_address(base + P_TARGET, target)
        st.store(base + P_VALUE, value)
        st.store(base + P_FLAG, int(flag))
        if name:
            st.store_bytes(base + P_NAME, name.encode())
        if desc:
            st.store_bytes(base + P_DESCRIPTION, desc)
        call.emit("ProposalCreated", pid, call.sender, kind, call.value, end)
        return pid

    # voting

    def vote(self, call: Call, proposal_id: int, option: int) -> None:
        st = call.store
        call.require(option in OPTION_NAMES, "option must be 1 (yes), 2 (no), 3 (abstain) or 4 (veto)")
        call.require(1 <= proposal_id <= st.load(S_COUNT), f"unknown proposal {proposal_id}")
        base = mapping_slot(M_PROPOSAL, proposal_id)
        end = st.load(base + P_END)
        call.require(st.load(base + P_STATUS) == STATUS_VOTING and call.block_number < end,
                     f"voting on proposal {proposal_id} is closed")
        account = mapping_slot(M_ACCOUNT, call.sender)
        weight = st.load(account + A_LOCKED)
        call.require(weight > 0, "no voting power: lock MOTUS with lock() before voting")
        vote = mapping_slot(M_VOTE, proposal_id, call.sender)
        previous = st.load(vote)
        if previous:  # a new vote replaces the old one: take the old weight out first
            field = base + TALLY_FIELDS[previous]
            st.store(field, st.load(field) - st.load(vote + 1))
        field = base + TALLY_FIELDS[option]
        st.store(field, st.load(field) + weight)
        st.store(vote, option)
        st.store(vote + 1, weight)
        if st.load(account + A_FROZEN) < end:
            st.store(account + A_FROZEN, end)
        call.emit("Voted", proposal_id, call.sender, option, weight)

    # views

    def getProposal(self, call: Call, proposal_id: int) -> tuple[Any, ...]:
        call.gas(2_100 * 20, "proposal read")
        p = get_proposal(call.state, proposal_id)
        call.require(p is not None, f"unknown proposal {proposal_id}")
        assert p is not None
        kind = {v: k for k, v in KIND_NAMES.items()}[p.kind]
        status = {v: k for k, v in STATUS_NAMES.items()}[p.status]
        return (kind, _checksum(p.proposer), p.deposit, status, p.critical, p.start_block,
                p.voting_end_block, p.executable_at, p.yes, p.no, p.abstain, p.veto, _checksum(p.target),
                p.value, p.flag, p.name, p.description)

    def getTally(self, call: Call, proposal_id: int) -> tuple[int, int, int]:
        call.require(1 <= proposal_id <= call.store.load(S_COUNT), f"unknown proposal {proposal_id}")
        base = mapping_slot(M_PROPOSAL, proposal_id)
        return (call.store.load(base + P_TALLIED), call.store.load(base + P_LOCKED_AT_TALLY),
                call.store.load(base + P_EXECUTED))

    def proposalCount(self, call: Call) -> int:
        return call.store.load(S_COUNT)

    def getVote(self, call: Call, proposal_id: int, voter: str) -> tuple[int, int]:
        base = mapping_slot(M_VOTE, proposal_id, _address(voter))
        return call.store.load(base), call.store.load(base + 1)

    def votingPower(self, call: Call, account: str) -> int:
        return call.store.load(mapping_slot(M_ACCOUNT, _address(account)) + A_LOCKED)

    def lockedOf(self, call: Call, account: str) -> tuple[int, int, int, int]:
        base = mapping_slot(M_ACCOUNT, _address(account))
        return tuple(call.store.load(base + f) for f in (A_LOCKED, A_PENDING, A_RELEASE, A_FROZEN))  # type: ignore[return-value]

    def totalLocked(self, call: Call) -> int:
        return call.store.load(S_TOTAL_LOCKED)

    # block execution

    def begin_block(self, state: StateAPI, env: Any, epoch_boundary: bool) -> None:
        process_block(state, env.height, epoch_boundary,
                      lambda event, *args: self.emit(state, None, event, *args))


def _address(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _checksum(address: bytes) -> str:
    return "0x" + address.hex()
