"""The light client's verification rules (light/client.py, docs/light.md), in process.

Headers, validator sets and commits are built with the project's own types and signed
with real secp256k1 keys; an in-process ``rpc`` answers ``motus_getHeader`` (in the
node's own JSON shape, vm/block.py ``header_fields``), ``motus_getCommit``,
``motus_getValidators`` and ``eth_getProof`` like a node would, and each test makes it
lie in one way. State proofs come from a real chain executed in process (tests/harness.py)
with real attestations and a paid epoch. The same client against a real node process is
in test_light_e2e.py."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from typing import Any

import pytest
import rlp
from eth_hash.auto import keccak
from trie import HexaryTrie

from consensus.crypto import address_of_private_key
from consensus.types import PRECOMMIT, Commit, Validator, ValidatorSet, Vote
from light import client as light
from light.client import LightClient, TrustedState
from vm.block import EMPTY_BLOOM, EMPTY_ROOT, ZERO_HASH, Header, header_fields

pytestmark = pytest.mark.timeout(60)

CHAIN_ID = 7077
T0_MS = 1_800_000_000_000  # genesis time of the synthetic chains
STEP_MS = 1_000
KEYS = [keccak(b"light client test key %d" % i) for i in range(8)]
ADDR = [address_of_private_key(k) for k in KEYS]


def valset(members: list[int], power: int = 10) -> ValidatorSet:
    return ValidatorSet([Validator(ADDR[i], power) for i in members])


class SignedChain:
    """Headers 0..n whose height ``h`` is signed by ``members(h)`` (indices into KEYS,
    power 10 each); ``signers(h)`` picks who actually signs the commit (default all)."""

    def __init__(self, n: int, members: Callable[[int], list[int]] = lambda h: [0, 1, 2, 3],
                 signers: Callable[[int], list[int]] | None = None, t0_ms: int = T0_MS) -> None:
        self.members = members
        self.headers: dict[int, Header] = {}
        self.commits: dict[int, Commit] = {}
        self.head = n
        first = valset(members(1)).hash()
        self.headers[0] = self._header(0, t0_ms, ZERO_HASH, first, first)
        for h in range(1, n + 1):
            header = self._header(h, t0_ms + h * STEP_MS, self.headers[h - 1].hash,
                                  valset(members(h)).hash(), valset(members(h + 1)).hash())
            self.headers[h] = header
            self.commits[h] = self.sign(header, (signers or members)(h))
        self.lies: dict[str, Callable[[list[Any], Any], Any]] = {}

    @staticmethod
    def _header(h: int, t_ms: int, parent: bytes, vhash: bytes, next_vhash: bytes,
                state_root: bytes | None = None) -> Header:
        return Header(CHAIN_ID, h, t_ms, parent, ADDR[0], state_root or keccak(b"state %d" % h),
                      EMPTY_ROOT, EMPTY_ROOT, EMPTY_ROOT, EMPTY_BLOOM, 30_000_000, 0, 10**9,
                      vhash, next_vhash, ZERO_HASH, ZERO_HASH)

    @staticmethod
    def sign(header: Header, signers: list[int], round_: int = 0) -> Commit:
        votes = [Vote.create(CHAIN_ID, KEYS[i], PRECOMMIT, header.height, round_, header.hash, ADDR[i])
                 for i in signers]
        return Commit.from_votes(header.height, round_, header.hash, votes)

    def now(self) -> float:
        """A local clock just after the head was made."""
        return (self.headers[self.head].timestamp_ms + 500) / 1000

    # --- the node's answers -------------------------------------------------------------

    def rpc(self, method: str, params: list[Any]) -> Any:
        answer = self._answer(method, params)
        if method in self.lies:
            return self.lies[method](params, answer)
        return answer

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_blockNumber":
            return hex(self.head)
        h = params[0]
        if method == "motus_getHeader":
            return header_fields(self.headers[h]) if h in self.headers else None
        if method == "motus_getCommit":
            c = self.commits.get(h)
            return None if c is None else {"height": c.height, "round": c.round,
                                           "blockHash": "0x" + c.block_hash.hex(),
                                           "rlp": "0x" + c.encode().hex()}
        if method == "motus_getValidators":
            if h > self.head + 1:
                return None
            vs = valset(self.members(h))
            return {"height": h, "hash": "0x" + vs.hash().hex(), "totalPower": vs.total_power,
                    "validators": [{"address": "0x" + v.address.hex(), "power": v.power,
                                    "proposerPriority": 0} for v in vs.validators]}
        raise AssertionError(f"unexpected call {method}")

    def genesis_client(self, **kw: Any) -> LightClient:
        state = TrustedState(self.headers[0], valset(self.members(1)), genesis_hash=self.headers[0].hash)
        return LightClient(self.rpc, state, now=kw.pop("now", self.now), **kw)


def refused(code: str, fn: Callable[[], Any]) -> light.LightError:
    with pytest.raises(light.LightError) as exc:
        fn()
    assert exc.value.code == code, f"{exc.value.code}: {exc.value}"
    return exc.value


# --- what verifies ---------------------------------------------------------------------------


def test_sequential_sync_verifies_every_header() -> None:
    chain = SignedChain(12)
    client = chain.genesis_client(sequential=True)
    assert client.sync(8).hash == chain.headers[8].hash
    assert client.trace == list(range(1, 9))
    assert client.sync().height == 12 and client.trace == [9, 10, 11, 12]


def test_skipping_with_a_stable_set_is_one_step() -> None:
    chain = SignedChain(50)
    client = chain.genesis_client()
    assert client.sync().hash == chain.headers[50].hash
    assert client.trace == [50]
    assert client.state.next_validators.hash() == chain.headers[50].next_validators_hash


def test_skipping_bisects_when_the_trusted_set_cannot_vouch() -> None:
    """Validators rotate: 0-3, then 2-5, then 4-7. The trusted set (0-3) signed nothing
    of height 30, so the client verifies height 15 (signed by 2-5: half of 0-3) first."""
    chain = SignedChain(30, members=lambda h: [0, 1, 2, 3] if h <= 10 else [2, 3, 4, 5] if h <= 20
                        else [4, 5, 6, 7])
    client = chain.genesis_client()
    assert client.sync().hash == chain.headers[30].hash
    assert client.trace == [15, 30]


def test_headers_below_the_trusted_one_verify_along_parent_hashes() -> None:
    chain = SignedChain(20)
    client = chain.genesis_client()
    client.sync()
    assert client.verify_header(7) == chain.headers[7]
    assert client.trusted.height == 20  # trust does not move backwards
    chain.headers[6] = SignedChain._header(6, T0_MS + 6 * STEP_MS, chain.headers[5].hash,
                                           chain.headers[6].validators_hash,
                                           chain.headers[6].next_validators_hash, state_root=b"\x01" * 32)
    refused("rpc_lied", lambda: client.verify_header(5))


def test_state_file_round_trip_is_owner_only(tmp_path) -> None:
    chain = SignedChain(5)
    client = chain.genesis_client()
    client.sync()
    path = tmp_path / "light.json"
    client.state.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = TrustedState.load(path)
    assert loaded.header == chain.headers[5] and loaded.genesis_hash == chain.headers[0].hash
    doc = json.loads(path.read_text())
    doc["nextValidators"][0]["power"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(light.LightStateError):
        TrustedState.load(path)


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("sequential", [True, False])
def test_forged_signature_is_bad_commit(sequential: bool) -> None:
    chain = SignedChain(6)
    h6 = chain.headers[6]
    forged = Vote.create(CHAIN_ID, KEYS[7], PRECOMMIT, 6, 0, h6.hash, ADDR[7]).signature
    sigs = list(chain.commits[6].signatures)
    sigs[0] = type(sigs[0])(sigs[0].validator, forged)  # validator 0's slot, key 7's signature
    chain.commits[6] = Commit(6, 0, h6.hash, sigs)
    err = refused("bad_commit", lambda: chain.genesis_client(sequential=sequential).sync())
    assert err.height == 6


def test_signature_over_another_block_is_bad_commit() -> None:
    chain = SignedChain(3)
    other = SignedChain._header(3, T0_MS + 3 * STEP_MS, chain.headers[2].hash,
                                chain.headers[3].validators_hash, chain.headers[3].next_validators_hash,
                                state_root=b"\x02" * 32)
    wrong = SignedChain.sign(other, [0, 1, 2, 3])
    chain.commits[3] = Commit(3, 0, chain.headers[3].hash, wrong.signatures)
    refused("bad_commit", lambda: chain.genesis_client(sequential=True).sync())


@pytest.mark.parametrize("sequential", [True, False])
def test_commit_short_of_two_thirds_is_insufficient_power(sequential: bool) -> None:
    # 2 of 4 equal validators hold 1/2: more than 1/3 (trust) but not more than 2/3
    chain = SignedChain(5, signers=lambda h: [0, 1] if h == 5 else [0, 1, 2, 3])
    refused("insufficient_power", lambda: chain.genesis_client(sequential=sequential).sync())
    exactly_two_thirds = SignedChain(5, members=lambda h: [0, 1, 2], signers=lambda h: [0, 1])
    refused("insufficient_power", lambda: exactly_two_thirds.genesis_client().sync())


def test_skip_without_trust_bisects_then_refuses_the_target() -> None:
    """One of four signed the target: the trusted set cannot vouch (<= 1/3), bisection
    verifies the good headers below it, and the adjacent check refuses the target."""
    chain = SignedChain(16, signers=lambda h: [3] if h == 16 else [0, 1, 2, 3])
    client = chain.genesis_client()
    refused("insufficient_power", client.sync)
    assert client.trusted.height == 15  # the honest headers on the way stay verified


def test_swapped_validator_set_is_validators_mismatch() -> None:
    chain = SignedChain(4)
    impostors = valset([4, 5, 6, 7])

    def swapped(params: list[Any], answer: Any) -> Any:
        if params[0] == 4:
            return {**answer, "hash": "0x" + impostors.hash().hex(),
                    "validators": [{"address": "0x" + v.address.hex(), "power": v.power}
                                   for v in impostors.validators]}
        return answer

    chain.lies["motus_getValidators"] = swapped
    err = refused("validators_mismatch", lambda: chain.genesis_client(sequential=True).sync())
    assert err.height == 4


@pytest.mark.parametrize("sequential", [True, False])
def test_fork_signed_by_another_set_is_refused(sequential: bool) -> None:
    """An attacker's chain from height 1 on, correctly hashed and signed by its own keys:
    its first header names a set that genesis did not announce."""
    honest = SignedChain(10)
    fork = SignedChain(10, members=lambda h: [4, 5, 6, 7])
    fork.headers[0] = honest.headers[0]
    for h in range(1, 11):  # re-link to the honest genesis and re-sign
        old = fork.headers[h]
        fork.headers[h] = SignedChain._header(h, old.timestamp_ms, fork.headers[h - 1].hash,
                                              old.validators_hash, old.next_validators_hash)
        fork.commits[h] = SignedChain.sign(fork.headers[h], [4, 5, 6, 7])
    state = TrustedState(honest.headers[0], valset([0, 1, 2, 3]))
    client = LightClient(fork.rpc, state, now=fork.now, sequential=sequential)
    refused("validators_mismatch", client.sync)
    assert client.trusted.height == 0


def test_wrong_header_hash_is_bad_header() -> None:
    chain = SignedChain(3)
    chain.lies["motus_getHeader"] = lambda params, answer: (
        {**answer, "hash": "0x" + keccak(b"not it").hex()} if params[0] == 3 else answer)
    refused("bad_header", lambda: chain.genesis_client().sync())


def test_rewritten_header_no_longer_matches_its_commit() -> None:
    """A node rewrites header 3's state root (and serves the matching hash): the commit
    was signed for the real header."""
    chain = SignedChain(3)
    real = chain.headers[3]
    chain.headers[3] = SignedChain._header(3, real.timestamp_ms, real.parent_hash, real.validators_hash,
                                           real.next_validators_hash, state_root=b"\x03" * 32)
    refused("bad_commit", lambda: chain.genesis_client(sequential=True).sync())


def test_wrong_chain_id_is_refused() -> None:
    chain = SignedChain(2)
    h = chain.headers[1]
    state = TrustedState(chain.headers[0], valset([0, 1, 2, 3]))
    foreign = h.copy(chain_id=CHAIN_ID + 1)
    chain.headers[1] = foreign
    chain.commits[1] = SignedChain.sign(foreign, [0, 1, 2, 3])
    client = LightClient(chain.rpc, state, now=chain.now, sequential=True)
    refused("wrong_chain", client.sync)


def test_expired_trust_is_refused() -> None:
    chain = SignedChain(5)
    period = light.DEFAULT_TRUSTING_PERIOD_S
    late = (chain.headers[0].timestamp_ms / 1000) + period + 1
    refused("expired_trust", lambda: chain.genesis_client(now=lambda: late).sync())
    # within the period it verifies, and the new trusted header restarts the clock
    client = chain.genesis_client(now=lambda: late - 2)
    assert client.sync().height == 5
    client.now = lambda: late + 3  # genesis has expired, header 5 (5 s younger) not yet
    assert client.verify_header(4) == chain.headers[4]
    client.now = lambda: late + 6
    refused("expired_trust", lambda: client.verify_header(4))
    refused("expired_trust", client.sync)


def test_header_from_the_future_is_clock_drift() -> None:
    chain = SignedChain(5)
    now = (chain.headers[5].timestamp_ms - 30_000) / 1000  # 30 s behind the head's time
    refused("clock_drift", lambda: chain.genesis_client(now=lambda: now).sync())
    drift_ok = (chain.headers[5].timestamp_ms - 5_000) / 1000  # within the 10 s default
    assert chain.genesis_client(now=lambda: drift_ok).sync().height == 5


def test_checkpoint_must_be_the_header_the_node_serves() -> None:
    chain = SignedChain(9)
    client = LightClient.from_checkpoint(chain.rpc, 4, chain.headers[4].hash, now=chain.now)
    assert client.trusted == chain.headers[4]
    assert client.sync().height == 9
    refused("rpc_lied", lambda: LightClient.from_checkpoint(chain.rpc, 4, b"\x11" * 32, now=chain.now))
    refused("unavailable", lambda: LightClient.from_checkpoint(chain.rpc, 99, b"\x11" * 32, now=chain.now))


def test_a_different_header_at_the_trusted_height_is_rpc_lied() -> None:
    chain = SignedChain(4)
    client = chain.genesis_client()
    client.sync()
    real = chain.headers[4]
    chain.headers[4] = SignedChain._header(4, real.timestamp_ms, real.parent_hash, real.validators_hash,
                                           real.next_validators_hash, state_root=b"\x04" * 32)
    refused("rpc_lied", lambda: client.verify_header(4))


def test_malformed_answers_are_rpc_lied() -> None:
    chain = SignedChain(2)
    chain.lies["motus_getCommit"] = lambda params, answer: {"height": 2}
    refused("rpc_lied", lambda: chain.genesis_client().sync())
    chain.lies["motus_getCommit"] = lambda params, answer: {**answer, "rlp": "0x" + "c0" * 3}
    refused("bad_commit", lambda: chain.genesis_client().sync())


# --- state proofs against a real chain ---------------------------------------------------------


@pytest.fixture(scope="module")
def paid_chain():
    """A chain run in process: three paired vehicles attest through one epoch and are paid."""
    from tests.vm.test_rewards_telemetry import new_fleet

    fleet, road = new_fleet(3)
    epoch = road.run_epoch({0: 7, 1: 4, 2: 3})
    return fleet, epoch


def proof_answer(chain, address: bytes, slots: list[int]) -> dict[str, Any]:
    """eth_getProof as the node computes it (node/rpc/eth.py), on the in-process chain."""
    from node.rpc.eth import _proof

    account_trie = HexaryTrie(chain.db, chain.head.state_root)
    raw = account_trie.get(keccak(address))
    nonce, balance, storage_root, code_hash = rlp.decode(raw) if raw else (b"", b"", EMPTY_ROOT,
                                                                            keccak(b""))
    storage_trie = HexaryTrie(chain.db, storage_root)
    items = []
    for slot in slots:
        key = keccak(slot.to_bytes(32, "big"))
        value = storage_trie.get(key)
        items.append({"key": "0x" + slot.to_bytes(32, "big").hex(),
                      "value": hex(int.from_bytes(rlp.decode(value), "big") if value else 0),
                      "proof": _proof(storage_trie, key)})
    return {"address": "0x" + address.hex(), "accountProof": _proof(account_trie, keccak(address)),
            "balance": hex(int.from_bytes(balance, "big")), "nonce": hex(int.from_bytes(nonce, "big")),
            "codeHash": "0x" + bytes(code_hash).hex(), "storageHash": "0x" + bytes(storage_root).hex(),
            "storageProof": items}


def test_vehicle_owner_and_reward_are_proven_against_the_state_root(paid_chain) -> None:
    from vm.modules.addresses import IDENTITY, REWARDS
    from vm.modules.identity import get_vehicle
    from vm.modules.rewards import get_vehicle_reward

    fleet, epoch = paid_chain
    chain, state = fleet.chain, fleet.chain.state()
    header = chain.head
    for vid in fleet.vehicle_ids:
        slots = light.vehicle_owner_slots(vid)
        owner = light.vehicle_owner_from(vid, light.verify_proof_answer(
            header, IDENTITY, slots, proof_answer(chain, IDENTITY, slots)))
        assert owner.owner == get_vehicle(state, vid).owner
        slots = light.reward_slots(vid, epoch)
        proven = light.vehicle_reward_from(vid, epoch, light.verify_proof_answer(
            header, REWARDS, slots, proof_answer(chain, REWARDS, slots)))
        record = get_vehicle_reward(state, epoch, vid)
        assert proven.settled and proven.recorded
        assert (proven.points, proven.reward, proven.owner, proven.qualified, proven.penalized) == (
            record.points, record.reward, record.owner, record.qualified, record.penalized)
    assert sorted(
        light.vehicle_reward_from(v, epoch, light.verify_proof_answer(
            header, REWARDS, light.reward_slots(v, epoch),
            proof_answer(chain, REWARDS, light.reward_slots(v, epoch)))).reward
        for v in fleet.vehicle_ids) == [0, 333, 667]  # test_rewards_telemetry's payout table
    # a vehicle that never existed and an epoch not settled yet are proven absent
    none = light.vehicle_owner_from(999, light.verify_proof_answer(
        header, IDENTITY, light.vehicle_owner_slots(999), proof_answer(chain, IDENTITY,
                                                                       light.vehicle_owner_slots(999))))
    assert none.owner is None
    later = light.vehicle_reward_from(fleet.vehicle_ids[0], epoch + 5, light.verify_proof_answer(
        header, REWARDS, light.reward_slots(fleet.vehicle_ids[0], epoch + 5),
        proof_answer(chain, REWARDS, light.reward_slots(fleet.vehicle_ids[0], epoch + 5))))
    assert (later.settled, later.recorded, later.reward) == (False, False, 0)


def test_tampered_proofs_are_refused(paid_chain) -> None:
    from vm.modules.addresses import IDENTITY

    fleet, _ = paid_chain
    chain = fleet.chain
    owner, _key = chain.accounts[2]
    slots = light.vehicle_owner_slots(fleet.vehicle_ids[0])
    good = proof_answer(chain, IDENTITY, slots)
    header = chain.head
    assert light.verify_proof_answer(header, IDENTITY, slots, good).storage[slots[0]]

    def flip(hex_node: str) -> str:
        raw = bytearray(bytes.fromhex(hex_node[2:]))
        raw[-1] ^= 1
        return "0x" + raw.hex()

    tampered = json.loads(json.dumps(good))
    tampered["accountProof"][-1] = flip(tampered["accountProof"][-1])
    refused("proof_invalid", lambda: light.verify_proof_answer(header, IDENTITY, slots, tampered))
    tampered = json.loads(json.dumps(good))
    tampered["storageProof"][0]["proof"][-1] = flip(tampered["storageProof"][0]["proof"][-1])
    refused("proof_invalid", lambda: light.verify_proof_answer(header, IDENTITY, slots, tampered))
    tampered = json.loads(json.dumps(good))
    del tampered["accountProof"][0]
    refused("proof_invalid", lambda: light.verify_proof_answer(header, IDENTITY, slots, tampered))
    # a proof against another block's root does not connect to this one
    other_root = header.copy(state_root=b"\x05" * 32)
    refused("proof_invalid", lambda: light.verify_proof_answer(other_root, IDENTITY, slots, good))
    # an honest proof with a claimed value that differs from what it proves
    lied = json.loads(json.dumps(good))
    lied["storageProof"][0]["value"] = hex(int.from_bytes(owner, "big") ^ 1)
    refused("rpc_lied", lambda: light.verify_proof_answer(header, IDENTITY, slots, lied))
    lied = json.loads(json.dumps(good))
    lied["balance"] = hex(10**30)
    refused("rpc_lied", lambda: light.verify_proof_answer(header, IDENTITY, slots, lied))
    refused("rpc_lied", lambda: light.verify_proof_answer(header, IDENTITY, slots + [7], good))


@pytest.mark.parametrize("head", [-1, True, "0x1_0"])
def test_malformed_block_number_is_rpc_lied(head: Any) -> None:
    # a negative or boolean JSON number, or a hex quantity Python's int() tolerates, is no
    # block number: refused with a code, not an uncaught ValueError
    chain = SignedChain(3)
    chain.lies["eth_blockNumber"] = lambda params, answer: head
    refused("rpc_lied", lambda: chain.genesis_client().sync())


@pytest.mark.parametrize("power", [float("inf"), float("nan"), 10.0, "10", True])
def test_validator_power_not_a_json_integer_is_rpc_lied(power: Any) -> None:
    # json.loads turns 1e999 into inf, and int(inf) raises OverflowError (not ValueError)
    chain = SignedChain(3)

    def lie(params: list[Any], answer: Any) -> Any:
        return {**answer, "validators": [{**v, "power": power} for v in answer["validators"]]}

    chain.lies["motus_getValidators"] = lie
    refused("rpc_lied", lambda: chain.genesis_client().sync())


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "1e999", "infd"])
def test_durations_must_be_finite(text: str) -> None:
    # int(inf * 1000) in the trusting-period check would raise OverflowError on every run
    import argparse

    from cli.light import parse_duration

    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)
    assert parse_duration("14d") == 14 * 86_400 and parse_duration("0.5") == 0.5


def test_a_head_below_the_trusted_header_does_not_move_reads_back() -> None:
    # a node claiming an older head must not make head reads (balance, owner) prove
    # stale state when the client has already verified a newer header
    chain = SignedChain(10)
    client = chain.genesis_client()
    client.sync()
    chain.lies["eth_blockNumber"] = lambda params, answer: hex(3)
    assert client.sync() == chain.headers[10]
    assert client.sync(3) == chain.headers[3]  # an explicit height is still served


def test_a_sync_refused_half_way_keeps_what_it_verified(tmp_path, monkeypatch) -> None:
    """The CLI saves the trusted state while a sync advances (cli/light.py), so a
    node that fails at height 9 of a sequential sync leaves heights 1-8 trusted on disk."""
    from cli import light as cli_light

    chain = SignedChain(12)
    chain.lies["motus_getCommit"] = lambda params, answer: None if params[0] == 9 else answer
    client = chain.genesis_client(sequential=True)
    path = tmp_path / "light.json"
    client.state.save(path)
    monkeypatch.setattr(cli_light, "SAVE_INTERVAL_S", 0.0)
    client.on_trust = cli_light._periodic_saver(client.state, path)
    refused("unavailable", client.sync)
    assert TrustedState.load(path).header.hash == chain.headers[8].hash
