"""What every ``motus`` command that talks to a node shares: argument parsers, key
and password loading, the signer and RPC flags, and the exit-status convention
(0 done, 1 the chain refused or nothing found, 2 a local problem)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_abi.exceptions import EncodingError

from node.home import Home
from node.keys import KeyError_, list_keystores, load_keystore, require_owner_only
from rpcclient import RPCError
from rpcclient.txsend import TxError

DEFAULT_RPC = "http://127.0.0.1:8545"

Handler = Callable[[argparse.Namespace], dict[str, Any]]


class UsageError(Exception):
    """A local problem the user fixes: argument, key file, password."""


class NotFound(Exception):
    """``show`` of something that does not exist (exit 1)."""


class Refused(Exception):
    """The node refused a read, e.g. telemetry without the permission (exit 1);
    ``status`` is the node's stable reason code."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_fixed_hex(text: str, length: int, what: str) -> str:
    """``length`` bytes as 0x-hex, returned lower-case; ``what`` names it in errors."""
    s = text.strip().lower()
    if not s.startswith("0x") or len(s) != 2 + 2 * length:
        raise argparse.ArgumentTypeError(f"not {what} (0x + {2 * length} hex digits): {text!r}")
    try:
        bytes.fromhex(s[2:])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    return s


def parse_address(text: str) -> str:
    """A 20-byte 0x-hex address, returned lower-case."""
    return parse_fixed_hex(text, 20, "an address")


def parse_id(text: str) -> int:
    """A token id: decimal or 0x-hex, positive."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"ids start at 1, got {value}")
    return value



# --- terminal output --------------------------------------------------------------------

RED, YELLOW, GREEN = "31", "33", "32"


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal (``stream``, stdout by default) and never with
    ``NO_COLOR`` set (https://no-color.org): logs and pipes get no escape codes."""
    stream = sys.stdout if stream is None else stream
    return not os.environ.get("NO_COLOR") and bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str, enabled: bool) -> str:
    """``text`` in an ANSI ``colour`` when ``enabled`` (see :func:`use_colour`)."""
    return f"\x1b[{colour}m{text}\x1b[0m" if enabled else text


# --- keys ------------------------------------------------------------------------------


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    """The keystore password: ``--password-file`` (first line), else ``MOTUS_PASSWORD``,
    else a prompt when on a terminal (asked twice with ``confirm``, for new keys)."""
    if getattr(args, "password_file", None):
        return Path(args.password_file).read_text().rstrip("\n")
    env = os.environ.get("MOTUS_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise UsageError("no password: use --password-file or MOTUS_PASSWORD")
    password = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("repeat: ") != password:
        raise UsageError("passwords differ")
    return password


def load_key_file(path: str | Path) -> bytes:
    """A raw private key: 64 hex digits (``0x`` optional) in a file that only its owner
    may read (mode 0600 or stricter)."""
    path = Path(path)
    require_owner_only(path)
    text = path.read_text().strip().removeprefix("0x")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{path}: not a hex private key") from None
    if len(key) != 32:
        raise UsageError(f"{path}: a private key is 32 bytes (64 hex digits)")
    return key


def signer_key(args: argparse.Namespace) -> bytes:
    """The account key that signs the transaction, from --keystore, --from or
    --private-key-file."""
    if args.private_key_file:
        return load_key_file(args.private_key_file)
    if args.keystore:
        path = Path(args.keystore)
    else:
        if not args.home:
            raise UsageError("--from needs --home DIR (the keystore is DIR/keystore)")
        keystore_dir = Home(Path(args.home)).keystore
        found = [p for a, p in list_keystores(keystore_dir) if a == args.sender]
        if not found:
            raise UsageError(
                f"no keystore for {args.sender} in {keystore_dir} "
                f"(see motus keys list --home {args.home})"
            )
        path = found[0]
    if not path.is_file():
        raise UsageError(f"no keystore file {path}")
    return load_keystore(path, read_password(args))



# --- running commands ---------------------------------------------------------------------


def run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: print its JSON, map failures to exit statuses 1 and 2."""

    def command(args: argparse.Namespace) -> int:
        try:
            out = handler(args)
        except TxError as exc:
            print(json.dumps(exc.to_json(), indent=2))
            print(f"motus: {exc.status}: {exc.reason}", file=sys.stderr)
            return 1
        except Refused as exc:
            print(json.dumps({"status": exc.status, "code": exc.status, "reason": exc.reason}, indent=2))
            print(f"motus: {exc.status}: {exc.reason}", file=sys.stderr)
            return 1
        except NotFound as exc:
            print(json.dumps({"status": "not_found", "reason": str(exc)}, indent=2))
            print(f"motus: not found: {exc}", file=sys.stderr)
            return 1
        except RPCError as exc:
            print(f"motus: error: {exc}", file=sys.stderr)
            return 2
        except (UsageError, KeyError_, OSError, EncodingError) as exc:
            print(f"motus: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(out, indent=2))
        return 0

    command.__doc__ = handler.__doc__
    return command



# --- parser pieces ----------------------------------------------------------------------------


def rpc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", default=DEFAULT_RPC, help=f"node JSON-RPC URL (default {DEFAULT_RPC})")


def signer_args(p: argparse.ArgumentParser) -> None:
    rpc_args(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--keystore", metavar="FILE", help="encrypted keystore JSON (motus keys new)")
    who.add_argument(
        "--from",
        dest="sender",
        type=parse_address,
        metavar="ADDRESS",
        help="use the keystore of ADDRESS in HOME/keystore (needs --home)",
    )
    who.add_argument(
        "--private-key-file",
        metavar="FILE",
        help="raw hex private key, mode 0600 (devnets, scripts)",
    )
    p.add_argument("--home", help="node home whose keystore/ --from searches")
    p.add_argument("--password-file", help="keystore password (else MOTUS_PASSWORD, else prompt)")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the receipt (default 60)"
    )


def block_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block", default="latest", help="height or tag (default latest)")
