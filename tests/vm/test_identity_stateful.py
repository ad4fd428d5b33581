"""Random sequences of identity transactions against a plain-Python model.

Each rule sends a real signed transaction (legal or not) and checks that it succeeds
exactly when the model says it should. After every step the chain must keep the
invariants: a device is paired with at most one vehicle and that vehicle points back
at it; balances equal owned counts; totalSupply equals minted minus burned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.eip712_types import CLAIM_TYPES, PAIR_TYPES
from tests.harness import CHAIN_ID, LocalChain, Module
from vm.execute import receipt_status
from vm.modules import addresses
from vm.modules.identity import (
    ZERO_ADDRESS,
    balance_of,
    get_device,
    get_vehicle,
    total_supply,
    vehicles_of,
)
from vm.vin import with_check_digit

USERS = (0, 2, 3)  # dev accounts that own things; account 1 is the manufacturer
DEVICES = 3
FAR = 2**40

DOMAIN = {
    "name": "Motus Identity",
    "version": "1",
    "chainId": CHAIN_ID,
    "verifyingContract": to_checksum_address(addresses.IDENTITY),
}

user = st.sampled_from(USERS)
device_pick = st.integers(0, DEVICES - 1)


@dataclass
class Device:
    owner: bytes
    claimed: bool = False
    vehicle: int = 0
    nonce: int = 0


@dataclass
class Model:
    owners: dict[int, bytes] = field(default_factory=dict)  # live vehicles
    paired: dict[int, int] = field(default_factory=dict)  # vehicle -> device index
    approved: dict[int, bytes] = field(default_factory=dict)
    minted: int = 0
    burned: int = 0


class IdentityMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.chain = LocalChain()
        self.m = Module(self.chain, "identity", addresses.IDENTITY)
        self.keys = {self.chain.accounts[i][0]: self.chain.accounts[i][1] for i in range(4)}
        self.maker = self.chain.accounts[1][0]
        self.model = Model()
        self.device_keys: list[LocalAccount] = [
            Account.from_key(keccak(b"stateful %d" % i)) for i in range(DEVICES)
        ]
        self.devices = [Device(owner=self.maker) for _ in range(DEVICES)]
        for dev in self.device_keys:
            self.send(self.maker, "mintDevice", dev.address, expect=True)
        # a populated start, so short examples already reach pairing, burning and unpairing
        for i in USERS:
            self.mint(i)
        self.claim(0, USERS[0])
        self.claim(1, USERS[1])

    def send(self, sender: bytes, fn: str, *args: object, expect: bool) -> None:
        receipt = self.chain.transact(self.keys[sender], addresses.IDENTITY, self.m.data(fn, *args))
        assert receipt_status(receipt) == int(expect), (fn, args, expect)
        event(f"{fn} {'ok' if expect else 'refused'}")

    def account(self, i: int) -> bytes:
        return self.chain.accounts[i][0]

    def device_owner_of(self, vehicle_id: int) -> bytes | None:
        d = self.model.paired.get(vehicle_id)
        return None if d is None else self.devices[d].owner

    # --- rules: each draws either a candidate the model expects to succeed or anything --

    def draw_vehicle(self, data: st.DataObject) -> int:
        """A live vehicle half of the time; else any id (live, burned, never minted)."""
        live = sorted(self.model.owners)
        if live and data.draw(st.booleans()):
            return data.draw(st.sampled_from(live))
        return data.draw(st.integers(1, self.model.minted + 2))

    def draw_user(self, data: st.DataObject, likely: bytes | None = None) -> bytes:
        if likely is not None and data.draw(st.booleans()):
            return likely
        return self.account(data.draw(user))

    @rule(who=user)
    def mint(self, who: int) -> None:
        owner = self.account(who)
        self.model.minted += 1
        vin = with_check_digit(f"1HGCM82603A{self.model.minted:06d}")
        self.send(owner, "mintVehicle", "Make", "Model", 2020, vin, expect=True)
        self.model.owners[self.model.minted] = owner

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        vid = self.draw_vehicle(data)
        owner = self.model.owners.get(vid)
        sender = self.draw_user(data, owner)
        dest = self.account(data.draw(user))
        ok = owner is not None and sender in (owner, self.model.approved.get(vid))
        self.send(sender, "transferFrom", owner or sender, dest, vid, expect=ok)
        if ok:
            self.model.owners[vid] = dest
            self.model.approved.pop(vid, None)

    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        vid = self.draw_vehicle(data)
        owner = self.model.owners.get(vid)
        sender = self.draw_user(data, owner)
        spender = self.account(data.draw(user))
        ok = owner is not None and sender == owner and spender != owner
        self.send(sender, "approve", spender, vid, expect=ok)
        if ok:
            self.model.approved[vid] = spender

    @rule(d=device_pick, who=user)
    def claim(self, d: int, who: int) -> None:
        sender, dev, key = self.account(who), self.devices[d], self.device_keys[d]
        message = {
            "device": key.address,
            "owner": to_checksum_address(sender),
            "nonce": dev.nonce,
            "deadline": FAR,
        }
        sig = Account.sign_typed_data(key.key, DOMAIN, CLAIM_TYPES, message).signature
        ok = not dev.claimed
        self.send(sender, "claimDevice", key.address, dev.nonce, FAR, bytes(sig), expect=ok)
        if ok:
            dev.owner, dev.claimed, dev.nonce = sender, True, dev.nonce + 1

    @rule(data=st.data())
    def pair(self, data: st.DataObject) -> None:
        candidates = [
            (vid, d)
            for vid, owner in sorted(self.model.owners.items())
            for d, dev in enumerate(self.devices)
            if dev.claimed
            and dev.owner == owner
            and dev.vehicle == 0
            and vid not in self.model.paired
        ]
        if candidates and data.draw(st.booleans()):
            vid, d = data.draw(st.sampled_from(candidates))
        else:
            vid, d = self.draw_vehicle(data), data.draw(device_pick)
        sender = self.draw_user(data, self.model.owners.get(vid))
        dev, key = self.devices[d], self.device_keys[d]
        message = {
            "vehicleId": vid,
            "device": key.address,
            "owner": to_checksum_address(sender),
            "nonce": dev.nonce,
            "deadline": FAR,
        }
        sig = Account.sign_typed_data(key.key, DOMAIN, PAIR_TYPES, message).signature
        ok = (
            self.model.owners.get(vid) == sender
            and dev.claimed
            and dev.owner == sender
            and vid not in self.model.paired
            and dev.vehicle == 0
        )
        self.send(sender, "pairDevice", vid, key.address, dev.nonce, FAR, bytes(sig), expect=ok)
        if ok:
            self.model.paired[vid] = d
            dev.vehicle, dev.nonce = vid, dev.nonce + 1

    @rule(data=st.data())
    def unpair(self, data: st.DataObject) -> None:
        paired = sorted(self.model.paired)
        if paired and data.draw(st.booleans()):
            vid = data.draw(st.sampled_from(paired))
        else:
            vid = self.draw_vehicle(data)
        sender = self.draw_user(data, self.device_owner_of(vid))
        ok = vid in self.model.paired and sender in (
            self.model.owners[vid],
            self.device_owner_of(vid),
        )
        self.send(sender, "unpairDevice", vid, expect=ok)
        if ok:
            self.devices[self.model.paired.pop(vid)].vehicle = 0

    @rule(d=device_pick, data=st.data())
    def transfer_device(self, d: int, data: st.DataObject) -> None:
        dev = self.devices[d]
        sender = self.draw_user(data, dev.owner)
        dest = self.account(data.draw(user))
        ok = dev.claimed and dev.owner == sender
        self.send(sender, "transferDevice", self.device_keys[d].address, dest, expect=ok)
        if ok:
            dev.owner = dest

    @rule(data=st.data())
    def burn(self, data: st.DataObject) -> None:
        vid = self.draw_vehicle(data)
        sender = self.draw_user(data, self.model.owners.get(vid))
        ok = self.model.owners.get(vid) == sender and vid not in self.model.paired
        self.send(sender, "burnVehicle", vid, expect=ok)
        if ok:
            del self.model.owners[vid]
            self.model.approved.pop(vid, None)
            self.model.burned += 1

    # --- invariants ------------------------------------------------------------

    @invariant()
    def chain_matches_model_and_invariants_hold(self) -> None:
        if not hasattr(self, "chain"):
            return
        s = self.chain.state()
        # pairing is one-to-one and both directions agree
        for d, key in enumerate(self.device_keys):
            record = get_device(s, bytes.fromhex(key.address[2:]))
            assert record is not None
            assert (record.owner, record.claimed, record.vehicle_id, record.nonce) == (
                self.devices[d].owner,
                self.devices[d].claimed,
                self.devices[d].vehicle,
                self.devices[d].nonce,
            )
            if record.vehicle_id:
                vehicle = get_vehicle(s, record.vehicle_id)
                assert vehicle is not None and vehicle.device == record.address
        seen_devices = set()
        for vid in range(1, self.model.minted + 2):
            vehicle = get_vehicle(s, vid)
            assert (vehicle.owner if vehicle else None) == self.model.owners.get(vid)
            if vehicle and vehicle.device != ZERO_ADDRESS:
                assert vehicle.device not in seen_devices
                seen_devices.add(vehicle.device)
                assert get_device(s, vehicle.device).vehicle_id == vid
        # balances equal owned counts; supply equals minted minus burned
        for i in USERS:
            owner = self.account(i)
            owned = sorted(v for v, o in self.model.owners.items() if o == owner)
            assert vehicles_of(s, owner) == owned
            assert balance_of(s, owner) == len(owned)
        assert total_supply(s) == self.model.minted - self.model.burned == len(self.model.owners)


IdentityMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestIdentityInvariants = IdentityMachine.TestCase


def test_abi_balance_and_supply_agree_with_python_api():
    """The invariant above reads state through the Python API; the ABI views must agree."""
    chain = LocalChain()
    m = Module(chain, "identity", addresses.IDENTITY)
    (a0, k0), _, (a2, k2) = chain.accounts[:3]
    for i in range(3):
        m.send(k0, "mintVehicle", "Make", "Model", 2020, with_check_digit(f"1HGCM82603A{i:06d}"))
    m.send(k0, "transferFrom", a0, a2, 2)
    m.send(k0, "burnVehicle", 1)
    s = chain.state()
    assert m.call("balanceOf", a0) == balance_of(s, a0) == 1
    assert m.call("balanceOf", a2) == balance_of(s, a2) == 1
    assert m.call("totalSupply") == total_supply(s) == 2
    assert [m.call("tokenOfOwnerByIndex", a0, 0)] == vehicles_of(s, a0) == [3]
