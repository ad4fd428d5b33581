"""``motus init --param NAME=VALUE``: chain parameters of the genesis a new home gets,
checked against the parameter table before anything is made (docs/cli.md, "motus init")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from genesis.spec import GenesisSpec
from vm.params import PARAMS

EXIT_LOCAL_PROBLEM = 2


def init(home: Path, *args: str) -> int:
    return main(["init", "--home", str(home), *args])


def test_params_go_into_the_new_genesis(tmp_path: Path, capsys) -> None:
    home = tmp_path / "node"
    assert init(home, "--param", "max_block_cost=0", "--param", "epoch_length_blocks=1_000",
                "--param", "min_attestations=0x10") == 0
    params = GenesisSpec.load(home / "genesis.json").params
    assert (params["max_block_cost"], params["epoch_length_blocks"],
            params["min_attestations"]) == (0, 1000, 16)
    untouched = {n: v for n, v in params.items()
                 if n not in ("max_block_cost", "epoch_length_blocks", "min_attestations")}
    assert untouched == {n: s.default for n, s in PARAMS.items() if n in untouched}
    assert json.loads(capsys.readouterr().out)["home"] == str(home)
    # rerunning with the same values is fine (init is safe to rerun) ...
    assert init(home, "--param", "max_block_cost=0") == 0
    # ... but values the kept genesis was not made with are refused, naming them
    assert init(home, "--param", "max_block_cost=5", "--param", "epoch_length_blocks=1000") == \
        EXIT_LOCAL_PROBLEM
    err = capsys.readouterr().err
    assert "max_block_cost=0 (asked 5)" in err and "epoch_length_blocks" not in err
    assert GenesisSpec.load(home / "genesis.json").params["max_block_cost"] == 0


@pytest.mark.parametrize(("assignment", "message"), [
    ("epoch_lenght=30", "unknown chain parameter 'epoch_lenght'; known: epoch_length_blocks,"),
    ("epoch_length_blocks=5", "--param epoch_length_blocks=5 outside [10, 1000000]"),
    ("max_block_cost=-1", "--param max_block_cost=-1 outside [0, 100000000]"),
    ("max_block_cost=lots", "--param max_block_cost: not an integer: 'lots'"),
    ("max_block_cost", "--param wants NAME=VALUE, got 'max_block_cost'"),
])
def test_bad_params_are_one_line_errors_and_make_nothing(tmp_path: Path, capsys, assignment: str,
                                                         message: str) -> None:
    home = tmp_path / "node"
    assert init(home, "--param", assignment) == EXIT_LOCAL_PROBLEM
    err = capsys.readouterr().err.strip()
    assert err.startswith("motus: error: ") and message in err and "\n" not in err
    assert not home.exists()


def test_params_with_a_given_genesis_are_refused(tmp_path: Path, capsys) -> None:
    assert init(tmp_path / "a") == 0
    assert init(tmp_path / "b", "--genesis", str(tmp_path / "a" / "genesis.json"),
                "--param", "max_block_cost=0") == EXIT_LOCAL_PROBLEM
    assert "set the parameters in FILE" in capsys.readouterr().err
