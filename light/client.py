"""The light client (docs/light.md): follow a Motus chain through
an untrusted JSON-RPC node, verifying every answer it uses instead of believing it.

Trust starts from a genesis file (its hash is computed here) or a checkpoint (height
and hash) the user got from a source they trust. From there each header is verified
CometBFT-style against the validator set:

- **adjacent** (height h+1 after trusted h): the header's ``validatorsHash`` must equal
  the trusted header's ``nextValidatorsHash`` and its parent hash the trusted hash; its
  commit must carry more than 2/3 of that set's power.
- **skipping** (a farther height): the commit must carry more than 1/3 of the trusted
  header's next validator set (at least one honest validator vouches for it) *and* more
  than 2/3 of the header's own set. When the 1/3 fails the client bisects: it verifies a
  header half way first, and so on.
- the trusted header must be younger than the **trusting period** (validators that
  signed long ago may no longer be bonded or careful), and no header may be dated more
  than the **maximum clock drift** after the local clock.
- a header's ``keccak(rlp)`` must equal its hash and the commit's ``blockHash``; a
  validator set must hash to the header's ``validatorsHash``; every signature is
  recovered with :mod:`consensus.types` (vote digest, commit power rules).

State reads are ``eth_getProof`` answers checked with the ``trie`` package against the
verified header's ``stateRoot``; the driver-level facts (vehicle owner, reward of a
vehicle in an epoch) use the identity and rewards modules' own slot functions.

Every refusal is a :class:`LightError` with a stable ``code``. The latest trusted header
(with its verified next validator set) is kept in a small JSON file (mode 0600) by
:class:`TrustedState`, so the next run continues from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from codec.rlp import decode_items
from consensus.errors import BadSignature, InvalidCommit, MalformedMessage
from consensus.types import Commit, Validator, ValidatorSet
from vm.block import Header
from vm.errors import InvalidBlock

RPC = Callable[[str, list[Any]], Any]

DEFAULT_TRUSTING_PERIOD_S = 14 * 24 * 3600  # CometBFT's default: two weeks
DEFAULT_MAX_CLOCK_DRIFT_S = 10.0
STATE_VERSION = 1
MAX_PROOF_SLOTS = 1_000  # the node's eth_getProof limit (node/rpc/eth.py MAX_PROOF_KEYS)
MAX_BISECTION_STEPS = 10_000  # verification attempts per sync (CometBFT sets no bound)
EMPTY_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
EMPTY_CODE_HASH = keccak(b"")


# --- errors -------------------------------------------------------------------------------


class LightError(Exception):
    """A verification refused what the RPC node answered. ``code`` is stable."""

    code = "light_error"

    def __init__(self, message: str, *, height: int | None = None) -> None:
        super().__init__(message)
        self.height = height

    def to_json(self) -> dict[str, Any]:
        return {"status": "refused", "code": self.code, "reason": str(self), "height": self.height}


class BadHeader(LightError):
    """The header is not what it claims: RLP does not decode, keccak(rlp) differs from its
    hash, wrong chain id or height, time not after the trusted header's."""

    code = "bad_header"


class BadCommit(LightError):
    """The commit is malformed, for another block or height, or a signature does not
    recover to the validator it names (or names one twice, or a non-validator)."""

    code = "bad_commit"


class InsufficientPower(LightError):
    """Valid signatures, but not enough voting power: 2/3 of the header's own set, or
    1/3 of the trusted set after bisection ran out of intermediate headers."""

    code = "insufficient_power"


class CannotTrust(InsufficientPower):
    """Skipping: less than 1/3 of the trusted set signed. Not final: bisection follows."""


class ValidatorsMismatch(LightError):
    """A validator set does not hash to the header's validatorsHash, or an adjacent header
    names another set than its trusted parent announced (nextValidatorsHash)."""

    code = "validators_mismatch"


class ExpiredTrust(LightError):
    """The trusted header is older than the trusting period: re-initialise from a fresh
    checkpoint obtained out of band."""

    code = "expired_trust"


class ClockDrift(LightError):
    """A header is dated further in the future than the maximum clock drift allows."""

    code = "clock_drift"


class RPCLied(LightError):
    """The node's answer contradicts verified data or itself: another header at a trusted
    height, a broken parent-hash chain, a proof whose claimed values differ from what it
    proves, an answer of the wrong shape."""

    code = "rpc_lied"


class ProofInvalid(LightError):
    """An eth_getProof answer does not connect to the verified state root."""

    code = "proof_invalid"


class WrongChain(LightError):
    """The node serves another chain (genesis hash or chain id differs from the trusted)."""

    code = "wrong_chain"


class Unavailable(LightError):
    """The node has no header, commit or validator set for that height (yet)."""

    code = "unavailable"


class LightStateError(ValueError):
    """The state file is missing, unreadable or inconsistent (a local problem)."""


# --- trusted state --------------------------------------------------------------------------


@dataclass
class TrustedState:
    """What the client trusts: the latest verified header and the validator set that
    signs the block after it (verified against its ``next_validators_hash``), plus the
    settings it was initialised with. ``genesis_hash`` is set when trust began at genesis."""

    header: Header
    next_validators: ValidatorSet
    rpc_url: str = ""
    trusting_period_s: float = DEFAULT_TRUSTING_PERIOD_S
    max_clock_drift_s: float = DEFAULT_MAX_CLOCK_DRIFT_S
    genesis_hash: bytes | None = None

    def __post_init__(self) -> None:
        if self.next_validators.hash() != self.header.next_validators_hash:
            raise LightStateError("next validator set does not match the header's nextValidatorsHash")

    @property
    def chain_id(self) -> int:
        return self.header.chain_id

    def to_json(self) -> dict[str, Any]:
        h = self.header
        return {
            "version": STATE_VERSION,
            "rpc": self.rpc_url,
            "chainId": h.chain_id,
            "genesisHash": None if self.genesis_hash is None else "0x" + self.genesis_hash.hex(),
            "trustingPeriodS": self.trusting_period_s,
            "maxClockDriftS": self.max_clock_drift_s,
            "trusted": {
                "height": h.height,
                "hash": "0x" + h.hash.hex(),
                "timestampMs": h.timestamp_ms,
                "stateRoot": "0x" + h.state_root.hex(),
                "rlp": "0x" + h.encode().hex(),
            },
            "nextValidators": [
                {"address": "0x" + v.address.hex(), "power": v.power}
                for v in self.next_validators.validators
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrustedState:
        try:
            if doc.get("version") != STATE_VERSION:
                raise LightStateError(f"unknown state version {doc.get('version')!r}")
            trusted = doc["trusted"]
            header = Header.decode(_unhex(trusted["rlp"]))
            if header.hash != _unhex(trusted["hash"]):
                raise LightStateError("trusted header does not hash to the recorded hash")
            vals = ValidatorSet(
                [Validator(_unhex(v["address"]), int(v["power"])) for v in doc["nextValidators"]]
            )
            genesis = doc.get("genesisHash")
            return cls(
                header=header,
                next_validators=vals,
                rpc_url=str(doc.get("rpc") or ""),
                trusting_period_s=float(doc["trustingPeriodS"]),
                max_clock_drift_s=float(doc["maxClockDriftS"]),
                genesis_hash=None if genesis is None else _unhex(genesis),
            )
        except LightStateError:
            raise
        except (KeyError, TypeError, ValueError, InvalidBlock) as exc:
            raise LightStateError(f"malformed light client state: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write atomically with mode 0600 (the trust anchor is worth protecting)."""
        from codec.files import write_atomic

        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode(), mode=0o600)

    @classmethod
    def load(cls, path: str | Path) -> TrustedState:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LightStateError(f"no light client state at {path}: run motus light init") from None
        except (OSError, ValueError) as exc:
            raise LightStateError(f"cannot read {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise LightStateError(f"{path}: not a light client state")
        return cls.from_json(doc)


# --- what the node answers, checked --------------------------------------------------------


@dataclass(frozen=True)
class LightBlock:
    """A header with the commit that finalised it and the set that signed it, each
    checked for internal consistency (not yet against any trust)."""

    header: Header
    commit: Commit
    validators: ValidatorSet

    @property
    def height(self) -> int:
        return int(self.header.height)


@dataclass(frozen=True)
class Account:
    """An account proven against ``header``'s state root."""

    address: bytes
    nonce: int
    balance: int
    storage_root: bytes
    code_hash: bytes
    header: Header
    storage: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": "0x" + self.address.hex(),
            "balance": str(self.balance),
            "nonce": self.nonce,
            "storageHash": "0x" + self.storage_root.hex(),
            "codeHash": "0x" + self.code_hash.hex(),
            **proven_at(self.header),
        }


def proven_at(header: Header) -> dict[str, Any]:
    """The verified block a proof was checked against, for JSON output."""
    return {
        "blockNumber": header.height,
        "blockHash": "0x" + header.hash.hex(),
        "stateRoot": "0x" + header.state_root.hex(),
        "verified": True,
    }


def _unhex(text: Any) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise ValueError(f"not 0x-hex: {text!r}")
    return bytes.fromhex(text[2:])


def _quantity(text: Any) -> int:
    """A non-negative JSON integer or 0x-hex quantity; int() alone would also take
    booleans, negative numbers and ``0x1_0``."""
    if type(text) is int and text >= 0:
        return text
    digits = text[2:] if isinstance(text, str) and text.startswith("0x") else ""
    if not digits or not _HEX_DIGITS.issuperset(digits):
        raise ValueError(f"not a hex quantity: {text!r}")
    return int(digits, 16)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _power(value: Any) -> int:
    """A validator's power: a JSON integer (node/rpc/motus.py). int() of what json.loads
    makes of ``1e999`` (inf) raises OverflowError, which is no ValueError."""
    if type(value) is not int:
        raise ValueError(f"validator power is not an integer: {value!r}")
    return value


def parse_header(answer: Any, height: int) -> Header:
    """The header of a ``motus_getHeader(height)`` answer, from its ``rlp`` only (the
    named fields are a convenience and are not trusted); its hash must be ``hash``."""
    try:
        raw = _unhex(answer["rlp"])
        claimed = _unhex(answer["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RPCLied(f"malformed motus_getHeader answer: {exc}", height=height) from None
    try:
        header = Header.decode(raw)
    except InvalidBlock as exc:
        raise BadHeader(str(exc), height=height) from None
    if keccak(raw) != claimed:
        raise BadHeader(
            f"header {height}: keccak(rlp) is 0x{keccak(raw).hex()}, the node says 0x{claimed.hex()}",
            height=height,
        )
    if header.height != height:
        raise BadHeader(f"asked for header {height}, got one for height {header.height}", height=height)
    return header


def parse_commit(answer: Any, height: int) -> Commit:
    """The commit of a ``motus_getCommit(height)`` answer, decoded from its ``rlp``."""
    try:
        commit = Commit.decode(_unhex(answer["rlp"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RPCLied(f"malformed motus_getCommit answer: {exc}", height=height) from None
    except MalformedMessage as exc:
        raise BadCommit(str(exc), height=height) from None
    if commit.height != height:
        raise BadCommit(f"commit is for height {commit.height}, expected {height}", height=height)
    return commit


def parse_validators(answer: Any, height: int) -> ValidatorSet:
    """The validator set of a ``motus_getValidators(height)`` answer: addresses and powers
    (its ``hash`` and priorities are ignored; the caller hashes the set itself)."""
    try:
        rows = answer["validators"]
        return ValidatorSet([Validator(_unhex(v["address"]), _power(v["power"])) for v in rows])
    except (KeyError, TypeError, ValueError) as exc:
        raise RPCLied(f"malformed motus_getValidators answer: {exc}", height=height) from None


# --- verification rules ------------------------------------------------------------------------


def check_signatures(chain_id: int, commit: Commit, validators: ValidatorSet) -> None:
    """Every signature of ``commit`` recovers to the validator it names, a member of
    ``validators``, each at most once (BadCommit otherwise). Power is counted later by
    :meth:`ValidatorSet.verify_commit`."""
    seen: set[bytes] = set()
    for vote in commit.votes():
        if vote.validator in seen:
            raise BadCommit(f"validator 0x{vote.validator.hex()} signed the commit twice", height=commit.height)
        seen.add(vote.validator)
        if validators.get(vote.validator) is None:
            raise BadCommit(f"commit signed by 0x{vote.validator.hex()}, not a validator", height=commit.height)
        try:
            vote.signer(chain_id)
        except (BadSignature, MalformedMessage) as exc:
            raise BadCommit(f"signature of 0x{vote.validator.hex()}: {exc}", height=commit.height) from None


def verify_light_block(chain_id: int, block: LightBlock) -> None:
    """A light block is consistent on its own: the set hashes to the header's
    validatorsHash, the commit is for this header, every signature is genuine and the
    signers hold more than 2/3 of the set's power."""
    _check_consistent(chain_id, block)
    _check_own_power(chain_id, block)


def _check_consistent(chain_id: int, block: LightBlock) -> None:
    """Chain id, validator-set hash, commit for this header, genuine member signatures."""
    h = block.header
    if h.chain_id != chain_id:
        raise WrongChain(f"header {h.height} is for chain {h.chain_id}, not {chain_id}", height=h.height)
    if block.validators.hash() != h.validators_hash:
        raise ValidatorsMismatch(
            f"validator set of height {h.height} hashes to 0x{block.validators.hash().hex()}, "
            f"the header commits to 0x{h.validators_hash.hex()}",
            height=h.height,
        )
    if block.commit.block_hash != h.hash:
        raise BadCommit(
            f"commit of height {h.height} is for block 0x{block.commit.block_hash.hex()}, "
            f"not 0x{h.hash.hex()}",
            height=h.height,
        )
    check_signatures(chain_id, block.commit, block.validators)


def _check_own_power(chain_id: int, block: LightBlock) -> None:
    h = block.header
    try:
        block.validators.verify_commit(chain_id, h.height, h.hash, block.commit)
    except InvalidCommit as exc:
        raise InsufficientPower(f"header {h.height}: {exc}", height=h.height) from None


def verify_times(trusted: Header, untrusted: Header, now_ms: int, trusting_period_s: float,
                 max_clock_drift_s: float) -> None:
    """The trusted header is within the trusting period; the new one is later than it and
    not from the future (beyond the allowed drift)."""
    expires_ms = trusted.timestamp_ms + int(trusting_period_s * 1000)
    if now_ms >= expires_ms:
        raise ExpiredTrust(
            f"trusted header {trusted.height} is {(now_ms - trusted.timestamp_ms) / 1000:.0f} s old, "
            f"beyond the trusting period of {trusting_period_s:.0f} s: re-initialise from a recent "
            "checkpoint obtained from a source you trust",
            height=trusted.height,
        )
    if untrusted.timestamp_ms > now_ms + int(max_clock_drift_s * 1000):
        raise ClockDrift(
            f"header {untrusted.height} is dated {(untrusted.timestamp_ms - now_ms) / 1000:.1f} s "
            f"in the future (max clock drift {max_clock_drift_s:g} s)",
            height=untrusted.height,
        )
    if untrusted.timestamp_ms <= trusted.timestamp_ms:
        raise BadHeader(
            f"header {untrusted.height} is not later than trusted header {trusted.height}",
            height=untrusted.height,
        )


def verify_adjacent(trusted: Header, block: LightBlock, now_ms: int, trusting_period_s: float,
                    max_clock_drift_s: float) -> None:
    """Header ``trusted.height + 1``: same chain, signed by the set ``trusted`` announced."""
    h = block.header
    verify_times(trusted, h, now_ms, trusting_period_s, max_clock_drift_s)
    if h.parent_hash != trusted.hash:
        raise RPCLied(
            f"header {h.height} does not extend trusted header {trusted.height} (parent hash differs)",
            height=h.height,
        )
    if h.validators_hash != trusted.next_validators_hash:
        raise ValidatorsMismatch(
            f"header {h.height} names validator set 0x{h.validators_hash.hex()}, its trusted parent "
            f"announced 0x{trusted.next_validators_hash.hex()}",
            height=h.height,
        )
    verify_light_block(trusted.chain_id, block)


def verify_skipping(trusted: Header, trusted_next: ValidatorSet, block: LightBlock, now_ms: int,
                    trusting_period_s: float, max_clock_drift_s: float) -> None:
    """A header beyond ``trusted.height + 1``: more than 1/3 of the trusted next set
    signed it (CannotTrust otherwise: bisect) and more than 2/3 of its own set."""
    h = block.header
    verify_times(trusted, h, now_ms, trusting_period_s, max_clock_drift_s)
    _check_consistent(trusted.chain_id, block)
    try:
        trusted_next.verify_commit_trusting(trusted.chain_id, block.commit)
    except InvalidCommit as exc:
        raise CannotTrust(
            f"header {h.height}: {exc} (of the set trusted at height {trusted.height + 1})",
            height=h.height,
        ) from None
    _check_own_power(trusted.chain_id, block)


# --- proofs ------------------------------------------------------------------------------------

# A trie node is a 17-item branch, or a 2-item leaf or extension; nodes under 32 bytes
# are embedded in their parent, so a few levels nest. Decoded by the bounded decoder
# (docs/encoding.md) so a hostile node's proof costs O(size).
TRIE_NODE_MAX_DEPTH = 16
TRIE_NODE_MAX_ITEMS = 1024


def _decode_nodes(items: Any, what: str) -> list[Any]:
    try:
        return [decode_items(_unhex(n), max_depth=TRIE_NODE_MAX_DEPTH, max_items=TRIE_NODE_MAX_ITEMS)
                for n in items]
    except Exception as exc:  # bad hex (ValueError, TypeError) or RLPDecodeError
        raise ProofInvalid(f"{what}: undecodable proof node: {exc}") from None


def _prove(root: bytes, key: bytes, nodes: list[Any], what: str) -> bytes:
    from trie import HexaryTrie

    try:
        return bytes(HexaryTrie.get_from_proof(root, keccak(key), nodes))
    except Exception as exc:  # BadTrieProof, and trie's validation of malformed nodes
        raise ProofInvalid(f"{what} does not connect to root 0x{root.hex()}: {exc}") from None


def verify_proof_answer(header: Header, address: bytes, slots: Sequence[int], answer: Any) -> Account:
    """Check an ``eth_getProof(address, slots)`` answer against ``header.stateRoot``
    (EIP-1186, independently of the node's code) and return what it proves. A proof
    that does not connect is ProofInvalid; claimed values that differ from the proven
    ones (or another address or slot list) are RPCLied."""
    try:
        account_items = answer["accountProof"]
        storage_items = answer["storageProof"]
        claimed = (
            _quantity(answer["nonce"]),
            _quantity(answer["balance"]),
            _unhex(answer["storageHash"]),
            _unhex(answer["codeHash"]),
        )
        claimed_address = _unhex(answer["address"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RPCLied(f"malformed eth_getProof answer: {exc}", height=header.height) from None
    if claimed_address != address:
        raise RPCLied(f"asked for a proof of 0x{address.hex()}, got 0x{claimed_address.hex()}")
    raw = _prove(header.state_root, address, _decode_nodes(account_items, "account proof"),
                 "account proof")
    if raw:
        try:
            fields = decode_items(raw, max_depth=1, max_items=5)  # [nonce, balance, root, code]
            if len(fields) != 4 or not all(isinstance(f, bytes) for f in fields):
                raise ValueError("expected four byte strings")
            nonce_b, balance_b, storage_root, code_hash = (bytes(f) for f in fields)  # type: ignore[arg-type]
            nonce, balance = int.from_bytes(nonce_b, "big"), int.from_bytes(balance_b, "big")
        except Exception as exc:
            raise ProofInvalid(f"proven account is not an account: {exc}") from None
    else:  # proof of absence
        nonce, balance, storage_root, code_hash = 0, 0, EMPTY_ROOT, EMPTY_CODE_HASH
    if claimed != (nonce, balance, storage_root, code_hash):
        raise RPCLied(
            f"eth_getProof claims nonce {claimed[0]}, balance {claimed[1]} for 0x{address.hex()}, "
            f"its proof shows nonce {nonce}, balance {balance} (or other roots)",
            height=header.height,
        )
    if not isinstance(storage_items, list) or len(storage_items) != len(slots):
        raise RPCLied(f"asked for {len(slots)} storage proofs, got another list", height=header.height)
    storage: dict[int, int] = {}
    for slot, item in zip(slots, storage_items, strict=True):
        try:
            key = int.from_bytes(_unhex(item["key"]), "big")
            claimed_value = _quantity(item["value"])
            nodes = item["proof"]
        except (KeyError, TypeError, ValueError) as exc:
            raise RPCLied(f"malformed storage proof: {exc}", height=header.height) from None
        if key != slot:
            raise RPCLied(f"asked for slot {slot:#x}, got a proof of {key:#x}", height=header.height)
        raw_value = _prove(storage_root, slot.to_bytes(32, "big"), _decode_nodes(nodes, "storage proof"),
                           f"storage proof of slot {slot:#x}")
        try:
            value = int.from_bytes(decode_items(raw_value, max_depth=0, max_items=1), "big") if raw_value else 0
        except Exception as exc:
            raise ProofInvalid(f"proven slot value is not RLP: {exc}") from None
        if value != claimed_value:
            raise RPCLied(
                f"eth_getProof claims slot {slot:#x} holds {claimed_value}, its proof shows {value}",
                height=header.height,
            )
        storage[slot] = value
    return Account(address, nonce, balance, storage_root, code_hash, header, storage)


# --- driver-level facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class VehicleOwner:
    vehicle_id: int
    owner: bytes | None  # None: no such vehicle at that block (never minted, or burned)
    header: Header

    def to_json(self) -> dict[str, Any]:
        return {
            "vehicleId": self.vehicle_id,
            "exists": self.owner is not None,
            "owner": None if self.owner is None else "0x" + self.owner.hex(),
            **proven_at(self.header),
        }


@dataclass(frozen=True)
class VehicleEpochReward:
    vehicle_id: int
    epoch: int
    settled: bool  # the epoch has been processed (its boundary block passed)
    recorded: bool  # the vehicle had data in the epoch
    qualified: bool
    penalized: bool
    points: int
    reward: int  # wei
    owner: bytes | None  # who was paid
    header: Header

    def to_json(self) -> dict[str, Any]:
        return {
            "vehicleId": self.vehicle_id,
            "epoch": self.epoch,
            "settled": self.settled,
            "recorded": self.recorded,
            "qualified": self.qualified,
            "penalized": self.penalized,
            "points": self.points,
            "reward": str(self.reward),
            "owner": None if self.owner is None else "0x" + self.owner.hex(),
            **proven_at(self.header),
        }


def vehicle_owner_slots(vehicle_id: int) -> list[int]:
    """Slots of the identity account that prove a vehicle's owner."""
    from vm.modules.identity import vehicle_owner_slot

    return [vehicle_owner_slot(vehicle_id)]


def vehicle_owner_from(vehicle_id: int, account: Account) -> VehicleOwner:
    value = account.storage[vehicle_owner_slots(vehicle_id)[0]]
    owner = value.to_bytes(32, "big")[-20:] if value else None
    return VehicleOwner(vehicle_id, owner, account.header)


def reward_slots(vehicle_id: int, epoch: int) -> list[int]:
    """Slots of the rewards account that prove a vehicle's record for an epoch: the
    epoch's processed flag, then the record's two words (flags, points and owner when
    scored; the reward: docs/rewards.md "State layout")."""
    from vm.modules import rewards as r

    base = r.mapping_slot(r.M_REWARD, epoch, vehicle_id)
    return [r.mapping_slot(r.M_EPOCH, epoch) + r.E_PROCESSED, base + r.R_RECORD, base + r.R_PAYOUT]


def vehicle_reward_from(vehicle_id: int, epoch: int, account: Account) -> VehicleEpochReward:
    from vm.modules import rewards as r

    processed, record, payout = (account.storage[s] for s in reward_slots(vehicle_id, epoch))
    rec = r.vehicle_reward_of(epoch, vehicle_id, record, payout)
    return VehicleEpochReward(
        vehicle_id=vehicle_id,
        epoch=epoch,
        settled=bool(processed),
        recorded=rec is not None,
        qualified=rec is not None and rec.qualified,
        penalized=rec is not None and rec.penalized,
        points=rec.points if rec is not None else 0,
        reward=rec.reward if rec is not None else 0,
        owner=rec.owner if rec is not None and rec.owner != b"\0" * 20 else None,
        header=account.header,
    )


# --- the client ----------------------------------------------------------------------------


def http_rpc(url: str, timeout: float = 10.0) -> RPC:
    """An :data:`RPC` calling a node's JSON-RPC at ``url`` (rpcclient/__init__.py)."""
    from rpcclient import rpc_call

    def call(method: str, params: list[Any]) -> Any:
        return rpc_call(url, method, params, timeout=timeout)

    return call


def genesis_trust(spec: Any) -> tuple[Header, ValidatorSet]:
    """The genesis header of a genesis spec (built in memory, as the node does) and the
    set that signs block 1."""
    from eth.db.atomic import AtomicDB

    from genesis.builder import build_genesis

    header = build_genesis(AtomicDB(), spec)
    return header, ValidatorSet([Validator(v.address, v.power) for v in spec.validators])


class LightClient:
    """Verifies headers and state read from an untrusted node, starting from ``state``.

    ``rpc(method, params)`` reaches the node; ``now()`` is the local clock in seconds.
    ``sequential`` verifies every header (adjacent steps) instead of skipping. After a
    forward verification ``state`` holds the new highest trusted header; the caller
    saves it (:meth:`TrustedState.save`)."""

    def __init__(self, rpc: RPC, state: TrustedState, *, now: Callable[[], float] = time.time,
                 sequential: bool = False) -> None:
        self.rpc = rpc
        self.state = state
        self.now = now
        self.sequential = sequential
        self.trace: list[int] = []  # heights verified by the last sync, in order
        # called after every newly trusted header (the CLI saves the state from it, so a
        # long sync that fails half way keeps what it verified)
        self.on_trust: Callable[[], None] | None = None

    # --- construction --------------------------------------------------------------

    @classmethod
    def from_genesis(cls, rpc: RPC, spec: Any, *, rpc_url: str = "", now: Callable[[], float] = time.time,
                     trusting_period_s: float = DEFAULT_TRUSTING_PERIOD_S,
                     max_clock_drift_s: float = DEFAULT_MAX_CLOCK_DRIFT_S) -> LightClient:
        """Trust the genesis of ``spec``; the node must serve the same genesis header."""
        header, first_set = genesis_trust(spec)
        served = parse_header(_need(rpc("motus_getHeader", [0]), "header", 0), 0)
        if served.hash != header.hash:
            raise WrongChain(
                f"the node's genesis is 0x{served.hash.hex()}, the genesis file's 0x{header.hash.hex()}",
                height=0,
            )
        state = TrustedState(header, first_set, rpc_url, trusting_period_s, max_clock_drift_s, header.hash)
        client = cls(rpc, state, now=now)
        client._check_not_expired(header)
        return client

    @classmethod
    def from_checkpoint(cls, rpc: RPC, height: int, block_hash: bytes, *, rpc_url: str = "",
                        now: Callable[[], float] = time.time,
                        trusting_period_s: float = DEFAULT_TRUSTING_PERIOD_S,
                        max_clock_drift_s: float = DEFAULT_MAX_CLOCK_DRIFT_S) -> LightClient:
        """Trust the header ``block_hash`` at ``height`` (from a source the user trusts):
        the node must serve exactly that header, and the next set it announces."""
        header = parse_header(_need(rpc("motus_getHeader", [height]), "header", height), height)
        if header.hash != block_hash:
            raise RPCLied(
                f"the node's header {height} is 0x{header.hash.hex()}, the checkpoint says "
                f"0x{block_hash.hex()}: another chain or a lying node",
                height=height,
            )
        next_set = _fetch_next_validators(rpc, header)
        state = TrustedState(header, next_set, rpc_url, trusting_period_s, max_clock_drift_s, None)
        client = cls(rpc, state, now=now)
        client._check_not_expired(header)
        return client

    # --- headers --------------------------------------------------------------------

    @property
    def trusted(self) -> Header:
        return self.state.header

    def head_height(self) -> int:
        """The node's head height (a claim: what is verified is the header there)."""
        try:
            return _quantity(self.rpc("eth_blockNumber", []))
        except ValueError as exc:
            raise RPCLied(f"malformed eth_blockNumber answer: {exc}") from None

    def sync(self, to: int | None = None) -> Header:
        """Verify up to height ``to`` (default: the node's head) and make it the trusted
        header; ``trace`` lists the heights verified on the way. A height at or below
        the trusted one changes nothing; a node head below it is ignored (reads at the
        head never prove older state than the client has already verified)."""
        target = max(self.head_height(), self.trusted.height) if to is None else to
        self.trace = []
        if target <= self.trusted.height:
            return self.verify_header(target)
        if self.sequential:
            for h in range(self.trusted.height + 1, target + 1):
                block = self.fetch(h)
                verify_adjacent(self.trusted, block, self._now_ms(), self.state.trusting_period_s,
                                self.state.max_clock_drift_s)
                self._trust(block)
        else:
            self._bisect(self.fetch(target))
        return self.trusted

    def verify_header(self, height: int) -> Header:
        """The verified header at ``height``: forward (skipping, or sequentially) from the
        trusted one, which then moves to ``height``; backwards along parent hashes."""
        if height > self.trusted.height:
            return self.sync(height)
        self._check_not_expired(self.trusted)
        if height == self.trusted.height:
            served = parse_header(_need(self.rpc("motus_getHeader", [height]), "header", height), height)
            if served.hash != self.trusted.hash:
                raise RPCLied(
                    f"the node's header {height} is 0x{served.hash.hex()}, the trusted one "
                    f"0x{self.trusted.hash.hex()}: a fork or a lying node",
                    height=height,
                )
            return self.trusted
        if height < 0:
            raise ValueError("heights start at 0")
        return self._verify_backwards(height)

    def fetch(self, height: int) -> LightBlock:
        """Header, commit and validator set of ``height`` as the node answers them."""
        header = parse_header(_need(self.rpc("motus_getHeader", [height]), "header", height), height)
        commit = parse_commit(_need(self.rpc("motus_getCommit", [height]), "commit", height), height)
        vals = parse_validators(_need(self.rpc("motus_getValidators", [height]), "validator set", height),
                                height)
        return LightBlock(header, commit, vals)

    def _bisect(self, target: LightBlock) -> None:
        """CometBFT's skipping verification: try the target; when the trusted set cannot
        vouch for it (<= 1/3 signed), try a header half way, then nearer still; after
        each success try the target again from the new trusted header."""
        cache = [target]  # cache[0] is the target, then ever nearer pivots
        depth = 0
        for _ in range(MAX_BISECTION_STEPS):
            block = cache[depth]
            try:
                if block.height == self.trusted.height + 1:
                    verify_adjacent(self.trusted, block, self._now_ms(), self.state.trusting_period_s,
                                    self.state.max_clock_drift_s)
                else:
                    verify_skipping(self.trusted, self.state.next_validators, block, self._now_ms(),
                                    self.state.trusting_period_s, self.state.max_clock_drift_s)
            except CannotTrust:
                if depth == len(cache) - 1:
                    pivot = self.trusted.height + (block.height - self.trusted.height) // 2
                    cache.append(self.fetch(pivot))
                depth += 1
                continue
            self._trust(block)
            if depth == 0:
                return
            cache = cache[:depth]
            depth = 0
        raise InsufficientPower(
            f"bisection towards {target.height} did not converge in {MAX_BISECTION_STEPS} steps",
            height=target.height,
        )

    def _trust(self, block: LightBlock) -> None:
        next_set = _fetch_next_validators(self.rpc, block.header)
        self.state.header = block.header
        self.state.next_validators = next_set
        self.trace.append(block.height)
        if self.on_trust is not None:
            self.on_trust()

    def _verify_backwards(self, height: int) -> Header:
        """Walk parent hashes down from the trusted header (hashes bind every field)."""
        current = self.trusted
        while current.height > height:
            h = current.height - 1
            older = parse_header(_need(self.rpc("motus_getHeader", [h]), "header", h), h)
            if older.hash != current.parent_hash:
                raise RPCLied(
                    f"header {h} is not the parent of verified header {current.height}", height=h
                )
            if older.timestamp_ms > current.timestamp_ms:
                raise BadHeader(f"header {h} is dated after its child", height=h)
            current = older
        return current

    def _check_not_expired(self, header: Header) -> None:
        now_ms = self._now_ms()
        if now_ms >= header.timestamp_ms + int(self.state.trusting_period_s * 1000):
            raise ExpiredTrust(
                f"trusted header {header.height} is {(now_ms - header.timestamp_ms) / 1000:.0f} s old, "
                f"beyond the trusting period of {self.state.trusting_period_s:.0f} s: initialise "
                "from a recent checkpoint obtained from a source you trust",
                height=header.height,
            )

    def _now_ms(self) -> int:
        return int(self.now() * 1000)

    # --- state -------------------------------------------------------------------------

    def get_account(self, address: bytes, slots: Sequence[int] = (), height: int | None = None) -> Account:
        """An account (and storage ``slots``) proven at a verified header: ``height``, or
        the node's head (verified first) when None."""
        if len(slots) > MAX_PROOF_SLOTS:
            raise ValueError(f"at most {MAX_PROOF_SLOTS} slots per proof")
        header = self.sync() if height is None else self.verify_header(height)
        answer = _need(
            self.rpc("eth_getProof", ["0x" + address.hex(), [hex(s) for s in slots], hex(header.height)]),
            "proof", header.height,
        )
        return verify_proof_answer(header, address, list(slots), answer)

    def get_storage(self, address: bytes, slot: int, height: int | None = None) -> tuple[int, Account]:
        account = self.get_account(address, [slot], height)
        return account.storage[slot], account

    def get_vehicle_owner(self, vehicle_id: int, height: int | None = None) -> VehicleOwner:
        """Who owns vehicle ``vehicle_id`` (identity's ERC-721 owner slot), proven."""
        from vm.modules.addresses import IDENTITY

        return vehicle_owner_from(vehicle_id, self.get_account(IDENTITY, vehicle_owner_slots(vehicle_id), height))

    def get_vehicle_reward(self, vehicle_id: int, epoch: int, height: int | None = None) -> VehicleEpochReward:
        """What ``vehicle_id`` scored and was paid for ``epoch`` (rewards module), proven."""
        from vm.modules.addresses import REWARDS

        account = self.get_account(REWARDS, reward_slots(vehicle_id, epoch), height)
        return vehicle_reward_from(vehicle_id, epoch, account)


def _need(answer: Any, what: str, height: int) -> Any:
    if answer is None:
        raise Unavailable(f"the node has no {what} for height {height}", height=height)
    return answer


def _fetch_next_validators(rpc: RPC, header: Header) -> ValidatorSet:
    """The set that signs ``header.height + 1``, checked against the header's
    nextValidatorsHash."""
    h = header.height + 1
    vals = parse_validators(_need(rpc("motus_getValidators", [h]), "validator set", h), h)
    if vals.hash() != header.next_validators_hash:
        raise ValidatorsMismatch(
            f"validator set of height {h} does not hash to header {header.height}'s nextValidatorsHash",
            height=h,
        )
    return vals
