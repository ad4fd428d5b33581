"""A LocalChain with devices minted, claimed and paired through real identity
transactions (the ``Fleet`` helper other telemetry tests and the bench use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_account import Account

from devnet.device import Device
from tests.harness import CHAIN_ID, LocalChain, Module
from vm.attestation import Attestation
from vm.execute import receipt_status
from vm.modules import addresses
from vm.modules.identity import get_device, get_vehicle
from vm.modules.telemetry import TelemetryView

FAR = 2**40  # signature deadline far beyond any block time here
TX_GAS = 500_000
TXS_PER_BLOCK = 50  # 50 * TX_GAS fits the 30M block gas limit

# Munich, Marienplatz: where simulated drives start unless told otherwise
HOME = (48.137154, 11.576124)


class Fleet:
    """``n`` devices, device i paired with vehicle ``vehicle_ids[i]`` owned by one of the
    dev accounts 2..9; dev account 1 is the licensed manufacturer (devnet genesis).
    ``extra`` more devices are minted and claimed but not paired."""

    def __init__(self, n: int, params: dict[str, int] | None = None, extra: int = 0,
                 chain: LocalChain | None = None) -> None:
        self.chain = chain or LocalChain(params=params)
        self.identity = Module(self.chain, "identity", addresses.IDENTITY)
        self.telemetry = Module(self.chain, "telemetry", addresses.TELEMETRY)
        res = self.chain.param("h3_resolution")
        every = [Device.generate(CHAIN_ID, res, seed=b"fleet %d" % i) for i in range(n + extra)]
        self.devices, self.unpaired = every[:n], every[n:]
        owners = self.chain.accounts[2:]
        self.owner_of = {d.address: owners[i % len(owners)] for i, d in enumerate(every)}
        self.vehicle_ids = self._register()

    def _batch(self, calls: Sequence[tuple[bytes, bytes]]) -> list[Any]:
        """Send (key, calldata) transactions to identity, many per block; all must succeed."""
        receipts = []
        for start in range(0, len(calls), TXS_PER_BLOCK):
            nonces: dict[bytes, int] = {}
            txs = []
            for key, data in calls[start:start + TXS_PER_BLOCK]:
                if key not in nonces:
                    sender = bytes.fromhex(Account.from_key(key).address[2:])
                    nonces[key] = self.chain.state().get_nonce(sender)
                txs.append(self.chain.sign(key, addresses.IDENTITY, data, gas=TX_GAS,
                                           nonce=nonces[key]))
                nonces[key] += 1
            result = self.chain.block(txs)
            assert all(receipt_status(r) == 1 for r in result.receipts), "identity tx failed"
            receipts.extend(result.receipts)
        return receipts

    def _register(self) -> list[int]:
        """Vehicles minted by their owners, devices by the manufacturer, then claimed and
        paired with the devices' EIP-712 signatures; returns the vehicle ids."""
        _, maker_key = self.chain.accounts[1]
        ident = self.identity
        every = self.devices + self.unpaired
        first_vehicle = ident.call("totalSupply") + 1
        vehicle_ids = list(range(first_vehicle, first_vehicle + len(self.devices)))

        def owner(d: Device) -> tuple[bytes, bytes]:
            return self.owner_of[d.address]

        self._batch([(owner(d)[1], ident.data("mintVehicle", "Motus", "Sim", 2024, _vin(d)))
                     for d in self.devices]
                    + [(maker_key, ident.data("mintDevice", d.checksum_address)) for d in every])
        self._batch([(owner(d)[1], ident.data("claimDevice", d.checksum_address, 0, FAR,
                                              d.claim_signature(owner(d)[0], 0, FAR)))
                     for d in every])
        self._batch([(owner(d)[1], ident.data("pairDevice", vid, d.checksum_address, 1, FAR,
                                              d.pair_signature(vid, owner(d)[0], 1, FAR)))
                     for d, vid in zip(self.devices, vehicle_ids, strict=True)])
        return vehicle_ids

    def now_ms(self) -> int:
        return self.chain.head.timestamp_ms

    def view(self, now_ms: int | None = None) -> TelemetryView:
        """Rules over a scratch copy of the head state, as for the next block."""
        env = self.chain.env()
        return TelemetryView(self.chain.state(), env.timestamp_ms if now_ms is None else now_ms,
                             env.height)


def _vin(device: Device) -> str:
    """A valid VIN of the device's own (Europe: no check digit), unique per device."""
    return "WMZ" + device.address.hex()[:14].upper()


def check_all(view: TelemetryView, atts: Sequence[Attestation]) -> list[str | None]:
    """Check and apply in order (as a block does); the codes, None for accepted."""
    out = []
    for att in atts:
        code = view.check(att)
        if code is None:
            view.apply(att)
        out.append(None if code is None else code.value)
    return out


def test_fleet_devices_are_paired_through_identity_transactions():
    fleet = Fleet(3, extra=1)
    s = fleet.chain.state()
    for device, vid in zip(fleet.devices, fleet.vehicle_ids, strict=True):
        record = get_device(s, device.address)
        assert record is not None and record.vehicle_id == vid
        assert get_vehicle(s, vid).device == device.address
        assert get_vehicle(s, vid).owner == fleet.owner_of[device.address][0]
    assert get_device(s, fleet.unpaired[0].address).vehicle_id == 0


def test_device_pairing_answers_as_the_whole_device_record():
    """identity.device_pairing reads the pairing before the token id (one read for a
    paired device): the answers must be get_device's for a paired device, a minted one
    never paired, one unpaired after pairing, and an address no manufacturer minted."""
    from vm.modules.identity import device_pairing, pairing_reader

    fleet = Fleet(2, extra=1)
    owner_key = fleet.owner_of[fleet.devices[1].address][1]
    fleet.identity.send(owner_key, "unpairDevice", fleet.vehicle_ids[1])
    s = fleet.chain.state()
    unknown = bytes.fromhex("77" * 20)
    reader = pairing_reader(s)
    cases = [fleet.devices[0].address, fleet.devices[1].address,
             fleet.unpaired[0].address, unknown]
    expected = [fleet.vehicle_ids[0], 0, 0, None]
    for device, want in zip(cases, expected, strict=True):
        record = get_device(s, device)
        assert (None if record is None else record.vehicle_id) == want
        assert device_pairing(s, device) == want
        assert reader(device) == want


def test_a_device_track_packs_back_to_the_slots_it_was_read_from():
    """The view keeps the device's two slots as read to tell what changed at commit
    (not the track packed again): every bit of both slots is a field, so a track read
    from any two values packs back to them."""
    import random

    from vm.modules.telemetry import DeviceTrack

    rng = random.Random(3)
    for _ in range(500):
        last, meta = rng.getrandbits(256), rng.getrandbits(256)
        assert DeviceTrack(last, meta).packed() == (last, meta)
    assert DeviceTrack(0, 0).packed() == (0, 0)
    assert DeviceTrack(2**256 - 1, 2**256 - 1).packed() == (2**256 - 1, 2**256 - 1)
