"""``motus license|grant|token`` refuse bad arguments locally (exit 2, nothing sent); run
in-process (``cli.main.main``) since no node is involved. The commands against a node
are exercised by tests/node/test_licenses_e2e.py."""

from __future__ import annotations

import pytest

from cli.main import main
from tests.procs import free_port

NOWHERE = f"http://127.0.0.1:{free_port()}"


def run(args: list[str]) -> int:
    """``motus ARGS`` in-process; argparse's own refusals exit 2 by SystemExit."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(("args", "message"), [
    (["grant", "--license", "1", "--vehicle", "1", "--template", "full"], "--expires is required"),
    (["grant", "--license", "1", "--vehicle", "1", "--template", "gold", "--expires", "+1d"],
     "--template is one of"),
    (["grant", "--license", "1", "--vehicle", "1", "--expires", "+1d"],
     "exactly one of --template and --perms"),
    (["grant", "--license", "1", "--vehicle", "x,y", "--template", "full", "--expires", "+1d"],
     "vehicle ids joined by commas"),
])
def test_grant_arguments_are_checked_before_anything_is_sent(args: list[str], message: str,
                                                             capsys) -> None:
    code = run([*args, "--private-key-file", "/nonexistent", "--rpc", NOWHERE])
    assert code == 2
    assert message in capsys.readouterr().err


def test_token_issue_with_an_unreachable_node_is_a_local_error(tmp_path, capsys) -> None:
    key = tmp_path / "signer.key"
    key.write_text("11" * 32)
    key.chmod(0o600)
    code = run(["token", "issue", "--license", "1", "--vehicle", "1", "--signer-key-file",
                 str(key), "--rpc", NOWHERE])
    assert code == 2 and "motus: error" in capsys.readouterr().err
