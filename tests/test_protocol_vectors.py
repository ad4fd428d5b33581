"""docs/protocol.md's test vectors, recomputed from the code: the page and the code
must agree, so another implementation can trust the page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from eth_hash.auto import keccak

from consensus.crypto import address_of_private_key
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    Proposal,
    Validator,
    ValidatorSet,
    Vote,
    proposal_digest,
    vote_digest,
)
from vm.block import EMPTY_BLOOM, EMPTY_ROOT, ZERO_HASH, Header
from vm.trie import compute_list_root

PAGE = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
CHAIN_ID = 7077


def page_vectors() -> dict[str, str]:
    block = re.search(r"```vectors\n(.*?)```", PAGE.read_text(), re.S)
    assert block, "docs/protocol.md has no ```vectors block"
    return dict(line.split() for line in block.group(1).splitlines() if line.strip())


def computed_vectors() -> dict[str, str]:
    address = address_of_private_key(KEY)
    block_hash = keccak(b"motus")
    validators = ValidatorSet([Validator(address, 10)])
    header = Header(
        CHAIN_ID, 1, 1_700_000_000_000, ZERO_HASH, address,
        EMPTY_ROOT, EMPTY_ROOT, EMPTY_ROOT, EMPTY_ROOT, EMPTY_BLOOM,
        30_000_000, 0, 1_000_000_000, validators.hash(), validators.hash(), ZERO_HASH, ZERO_HASH,
    )
    return {
        "address": address.hex(),
        "block_hash": block_hash.hex(),
        "prevote_digest": vote_digest(CHAIN_ID, PREVOTE, 1, 0, block_hash).hex(),
        "prevote": Vote.create(CHAIN_ID, KEY, PREVOTE, 1, 0, block_hash, address).encode().hex(),
        "nil_precommit_digest": vote_digest(CHAIN_ID, PRECOMMIT, 1, 0, b"").hex(),
        "proposal_digest": proposal_digest(CHAIN_ID, 1, 0, -1, block_hash).hex(),
        "proposal": Proposal.create(CHAIN_ID, KEY, 1, 0, -1, block_hash, address).encode().hex(),
        "validator_set": validators.encode().hex(),
        "validators_hash": validators.hash().hex(),
        "list_root_a_b": compute_list_root([b"a", b"b"]).hex(),
        "header_hash": header.hash.hex(),
    }


def test_protocol_page_vectors_match_the_code():
    assert page_vectors() == computed_vectors()


def test_signed_vectors_verify():
    vectors = page_vectors()
    address = bytes.fromhex(vectors["address"])
    assert Vote.decode(bytes.fromhex(vectors["prevote"])).signer(CHAIN_ID) == address
    assert Proposal.decode(bytes.fromhex(vectors["proposal"])).signer(CHAIN_ID) == address


def test_the_repository_is_its_own_specification():
    """Docs and code cite docs/, never design notes that live outside the repository."""
    root = PAGE.parent.parent
    tracked = subprocess.run(
        ["git", "ls-files", "*.md", "*.py", "Makefile", "*.toml"], cwd=root,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    offenders = [
        name for name in tracked
        if name != "tests/test_protocol_vectors.py"
        and any(word in (root / name).read_text(errors="replace") for word in ("DESIGN.md", "shared/"))
    ]
    assert not offenders, f"cite docs/ instead of outside notes: {offenders}"
