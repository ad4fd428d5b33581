"""Chain parameters: one typed table, defaults and bounds next to each other.

Every parameter is an integer stored in the storage of the params system
account (slot ``keccak("param:" + name)``), so it is covered by the state root,
readable by ``eth_call``/``eth_getProof`` and changeable by governance within
its bounds. Genesis writes every value; ``get_param`` reads the head state.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_hash.auto import keccak

ETHER = 10**18


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: int
    minimum: int
    maximum: int
    critical: bool  # critical changes need the 2/3 governance threshold
    doc: str


_SPECS = [
    # --- chain ---------------------------------------------------------------
    ParamSpec("epoch_length_blocks", 600, 10, 1_000_000, True,
              "Blocks per epoch (10 minutes at 1 s blocks)."),
    ParamSpec("block_gas_limit", 30_000_000, 1_000_000, 200_000_000, False, "Gas limit of every block."),
    ParamSpec("min_base_fee_per_gas", 1_000_000_000, 0, 10**15, False,
              "Floor of the EIP-1559 base fee (wei), so empty blocks cannot make spam free."),
    ParamSpec("max_block_attestations", 2000, 0, 20_000, False, "Attestations a block may carry."),
    # --- block cost (vm/cost.py, docs/consensus.md "Block cost"): units are microseconds
    # of CPU to execute on the reference machine (a 2-core x86 VM, measured 2026-12 by
    # bench/bench_block_cost.py); a block whose cost exceeds max_block_cost is invalid.
    ParamSpec("max_block_cost", 1_000_000, 0, 100_000_000, True,
              "Deterministic cap on a block's execution cost (units: us on the reference "
              "machine; the 1 s propose timeout). 0: no cap."),
    ParamSpec("tx_cost", 200, 0, 1_000_000, False,
              "Cost of a transaction itself: decode, signature, nonce and fee, receipt."),
    ParamSpec("account_cost", 200, 0, 1_000_000, False,
              "Cost of each distinct account a block's transactions name (sender, recipient): "
              "a state read and write that no cache holds."),
    ParamSpec("attestation_cost", 100, 0, 1_000_000, False, "Cost of an included attestation."),
    ParamSpec("evm_gas_cost", 250, 0, 1_000_000, False,
              "Cost per 1000 gas a transaction spends beyond its intrinsic gas in EVM code."),
    ParamSpec("module_gas_cost", 40, 0, 1_000_000, False,
              "Cost per 1000 gas a transaction to a system module spends beyond its intrinsic gas."),
    ParamSpec("settle_cost", 600, 0, 1_000_000, False,
              "Cost of one vehicle-step of epoch settlement (scoring or paying one vehicle, "
              "finalizing an epoch, half of clearing one vehicle's old records; docs/rewards.md "
              "\"Settlement\"), charged to the block that does it."),
    # --- proof of coverage (docs/telemetry.md) -----------------------------
    ParamSpec("h3_resolution", 7, 5, 7, False,
              "H3 resolution of the public attestation cell (7: about 1.4 km edge, 5 km2); "
              "at most 7 so the chain never publishes finer location (docs/privacy.md)."),
    ParamSpec("attestation_stale_ms", 300_000, 10_000, 3_600_000, False,
              "Reject attestations older than this before block time."),
    ParamSpec("attestation_future_ms", 10_000, 0, 600_000, False,
              "Reject attestations more than this after block time."),
    ParamSpec("min_interval_ms", 1_000, 1_000, 3_600_000, False,
              "Minimum time between two accepted attestations of one device (at least 1 s: "
              "the wire carries whole seconds)."),
    ParamSpec("max_speed_cmps", 7_000, 100, 100_000, False,
              "Implausible speed between consecutive cells (cm/s), 70 m/s."),
    ParamSpec("odometer_tolerance_bps", 2_000, 0, 10_000, False,
              "Cell distance may exceed odometer delta by this fraction (basis points) ..."),
    ParamSpec("odometer_tolerance_m", 1_000, 0, 100_000, False, "... plus this many metres."),
    ParamSpec("max_attestations_per_epoch", 1_000, 1, 1_000_000, False, "Per-device cap per epoch."),
    ParamSpec("min_attestations", 12, 1, 100_000, False,
              "Accepted attestations a vehicle needs in an epoch to qualify for rewards."),
    ParamSpec("challenge_fraction_bps", 1_000, 0, 10_000, False,
              "Fraction of devices challenged each epoch (basis points)."),
    ParamSpec("challenge_window_bps", 5_000, 100, 10_000, False,
              "Challenge window: this first part of the epoch (basis points)."),
    # --- rewards (DIMO: 1,105,000 a week, minus 15 % a year) -----------------
    ParamSpec("epoch_issuance", 1_105_000 * ETHER * 600 // 604_800, 0, 10**9 * ETHER, True,
              "Tokens minted per epoch before decay (DIMO's weekly issuance scaled to 10-minute epochs)."),
    ParamSpec("decay_bps", 1_500, 0, 10_000, True, "Issuance cut every decay period (basis points)."),
    ParamSpec("decay_period_epochs", 52_560, 1, 10**8, True, "Epochs per decay step (a year of 10-minute epochs)."),
    ParamSpec("settle_vehicles_per_block", 400, 2, 100_000, False,
              "Vehicle-steps of epoch settlement each block does at most (docs/rewards.md "
              "\"Settlement\"); also never more than half of max_block_cost / settle_cost. "
              "At least 2: clearing one vehicle's old records takes 2."),
    ParamSpec("reward_history_epochs", 24, 1, 1_000_000, False,
              "Settled epochs whose per-vehicle reward records (and telemetry's per-epoch "
              "counters) stay in state; older ones are cleared by settlement work "
              "(docs/rewards.md \"History window\"; their RewardPaid events remain)."),
    # --- governance (docs/governance.md) -------------------------------------
    ParamSpec("gov_min_deposit", 1_000 * ETHER, 1, 10**9 * ETHER, True, "Deposit a proposal needs."),
    ParamSpec("gov_voting_period_blocks", 600, 10, 10_000_000, True, "Voting period."),
    ParamSpec("gov_execution_delay_blocks", 60, 0, 10_000_000, True,
              "Blocks after a proposal passes before it may take effect (at the next epoch boundary)."),
    ParamSpec("gov_unlock_delay_blocks", 600, 0, 10_000_000, True, "Delay between unlock request and release."),
    ParamSpec("gov_quorum_bps", 3_340, 1, 10_000, True, "Quorum: share of locked supply that must vote."),
    ParamSpec("gov_threshold_bps", 5_000, 5_000, 10_000, True, "Yes share of non-abstain votes, ordinary class."),
    ParamSpec("gov_critical_threshold_bps", 6_667, 5_000, 10_000, True, "Yes share, critical class."),
    ParamSpec("gov_veto_bps", 3_334, 1, 10_000, True, "Veto share above which the deposit is burned."),
    # --- developer platform (docs/developers.md) -------------------------------
    ParamSpec("license_fee", 100 * ETHER, 0, 10**9 * ETHER, False,
              "MOTUS a developer license costs to mint (kept by the licenses module "
              "account, which nobody can spend: it leaves circulation)."),
    ParamSpec("synthetic_max_data_level", 1, 0, 3, False,
              "Highest data level a vehicle reporting through a synthetic device "
              "(a licensed software integration) reaches (docs/rewards.md)."),
]

PARAMS: dict[str, ParamSpec] = {s.name: s for s in _SPECS}


def param_slot(name: str) -> int:
    return int.from_bytes(keccak(b"param:" + name.encode()), "big")


def defaults() -> dict[str, int]:
    return {name: spec.default for name, spec in PARAMS.items()}


def check_param(name: str, value: int) -> None:
    spec = PARAMS.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter {name!r}")
    if not spec.minimum <= value <= spec.maximum:
        raise ValueError(f"{name}={value} outside [{spec.minimum}, {spec.maximum}]")
