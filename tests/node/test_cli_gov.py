"""``motus gov`` / ``motus rewards`` argument parsing, without a node (the commands
against a real node are in test_governance_e2e.py)."""

from __future__ import annotations

import argparse

import pytest

from cli.gov import GOVERNANCE, OPTIONS, parse_amount, parse_uint
from cli.main import build_parser
from vm.modules import addresses
from vm.modules.governance import OPTION_NAMES

MOTUS = 10**18


@pytest.mark.parametrize(
    "text, wei",
    [
        ("1000", 1000 * MOTUS),
        ("0.5", MOTUS // 2),
        ("1_000", 1000 * MOTUS),
        ("250wei", 250),
        ("1e-18", 1),
        (" 2 ", 2 * MOTUS),
    ],
)
def test_amounts_are_motus_or_wei(text: str, wei: int) -> None:
    assert parse_amount(text) == wei


@pytest.mark.parametrize("text", ["0", "-1", "1e-19", "abc", "1.5wei", "0wei", ""])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_amount(text)


def test_integers_and_constants_match_the_chain() -> None:
    assert parse_uint("0x10") == 16 and parse_uint("1_000") == 1000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_uint("-1")
    assert GOVERNANCE == "0x" + addresses.GOVERNANCE.hex()
    assert {v: k for k, v in OPTIONS.items()} == OPTION_NAMES


def test_commands_parse() -> None:
    p = build_parser()
    args = p.parse_args(["gov", "vote", "3", "VETO", "--private-key-file", "k"])
    assert (args.id, args.option_name) == (3, "veto")
    args = p.parse_args(
        [
            "gov",
            "propose",
            "param",
            "epoch_issuance",
            "1_000",
            "--deposit",
            "10",
            "--keystore",
            "ks.json",
        ]
    )
    assert (args.name, args.value, args.deposit) == ("epoch_issuance", 1000, 10 * MOTUS)
    args = p.parse_args(["rewards", "show", "--owner", "0x" + "AB" * 20, "--from", "2"])
    assert (args.owner, args.start, args.end) == ("0x" + "ab" * 20, 2, None)
    for bad in (
        ["gov", "vote", "1", "maybe", "--keystore", "k"],
        ["gov", "lock", "--amount", "0", "--keystore", "k"],
        ["gov", "show", "0"],
        ["rewards", "show", "--vehicle", "1", "--owner", "0x" + "00" * 20],
    ):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
