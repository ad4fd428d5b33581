"""``motus db check``: walk the head's state trie from its root, checking that every node
is present and hashes to its reference, every account's storage trie likewise, and
every contract's code is present. Also checks the head block and its indexes agree; on a
node that prunes (node.prune), the oldest state it claims to keep, walked the same way
without entering the subtrees the head's walk checked; and that the flat state snapshot
holds exactly the head's accounts and storage slots: the trie root rebuilt from all its
account entries must equal the head's state root, and the root rebuilt from each
account's slot entries its storage root (a full check, not a sample)."""

from __future__ import annotations

from dataclasses import dataclass, field

import rlp
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3
from eth_hash.auto import keccak

from node.db import FLAT_ACCOUNT, FLAT_SLOT
from node.store import ChainStore
from vm.flat import trie_root_from_sorted


@dataclass
class CheckReport:
    head: int
    state_root: bytes
    nodes: int = 0
    accounts: int = 0
    storage_slots: int = 0
    oldest_state: int = 0  # the lowest height whose state is kept (checked too when below the head)
    flat_accounts: int = 0
    flat_slots: int = 0
    flat_state: str = "ok"  # or "absent": not built yet (an upgraded node builds it at start)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_database(store: ChainStore, max_problems: int = 20) -> CheckReport:
    head = store.head
    report = CheckReport(head.height, head.state_root)
    if store.hash_at(head.height) != head.hash:
        report.problems.append("head height index does not point at the head block")
    if head.height > 0 and store.commit_at(head.height) is None:
        report.problems.append("head block has no stored commit")
    if store.validators_for(head.height + 1) is None:
        report.problems.append("no validator set stored for the next height")
    db = store.state_db
    checked: set[bytes] = set()  # nodes the head's walk verified
    skip_checked = False  # set for the oldest state's walk

    def walk(root: bytes, on_leaf) -> None:
        if root == BLANK_ROOT_HASH:
            return
        stack: list[bytes | list] = [root]
        while stack and len(report.problems) < max_problems:
            ref = stack.pop()
            if isinstance(ref, bytes) and len(ref) == 32:
                if skip_checked and ref in checked:
                    continue
                try:
                    raw = db[ref]
                except KeyError:
                    report.problems.append(f"missing trie node {ref.hex()}")
                    continue
                if keccak(raw) != ref:
                    report.problems.append(f"trie node {ref.hex()} does not hash to its key")
                    continue
                report.nodes += 1
                checked.add(ref)
                node = rlp.decode(raw)
            else:
                node = ref if isinstance(ref, list) else rlp.decode(ref)
            if node == b"" or node == []:
                continue
            if len(node) == 17:
                for i in range(16):
                    if node[i] != b"":
                        stack.append(node[i])
                if node[16] != b"":
                    on_leaf(node[16])
            elif len(node) == 2:
                if _is_leaf(node[0]):
                    on_leaf(node[1])
                else:
                    stack.append(node[1])
            else:
                report.problems.append(f"malformed trie node of {len(node)} items")

    def on_account(value: bytes) -> None:
        report.accounts += 1
        try:
            _nonce, _balance, storage_root, code_hash = rlp.decode(value)
        except Exception:
            report.problems.append("undecodable account")
            return
        if code_hash != EMPTY_SHA3:
            try:
                code = db[code_hash]
                if keccak(code) != code_hash:
                    report.problems.append(f"code {code_hash.hex()} does not hash to its key")
            except KeyError:
                report.problems.append(f"missing code {code_hash.hex()}")

        def on_slot(_v: bytes) -> None:
            report.storage_slots += 1

        walk(storage_root, on_slot)

    walk(head.state_root, on_account)
    report.oldest_state = min(store.oldest_state_height, head.height)
    if report.oldest_state < head.height and len(report.problems) < max_problems:
        oldest = store.header_by_height(report.oldest_state)
        if oldest is None:
            report.problems.append(f"no block at the oldest kept height {report.oldest_state}")
        else:
            skip_checked = True
            counts = report.nodes, report.accounts, report.storage_slots  # the head's
            walk(oldest.state_root, on_account)
            report.nodes, report.accounts, report.storage_slots = counts
    check_flat_state(store, report)
    return report


def check_flat_state(store: ChainStore, report: CheckReport) -> None:
    """The flat snapshot's marker names the head's state root, and its entries are the
    head's accounts, no more, no fewer, same bytes: the root of a trie built from them
    is the head's state root."""
    marker = store.state_db.flat.root
    if marker is None:
        report.flat_state = "absent"
        return
    if marker != report.state_root:
        report.problems.append(f"flat account snapshot is of state root {marker.hex()}, not the head's")
        return
    entries = []
    for key, value in store.db.iterator(prefix=FLAT_ACCOUNT):
        entries.append((key[1:], value))
    report.flat_accounts = len(entries)
    if any(len(k) != 32 or not v for k, v in entries):
        report.problems.append("flat account snapshot has a malformed entry")
        return
    if trie_root_from_sorted(entries) != report.state_root:
        report.problems.append(
            f"flat account snapshot ({len(entries)} accounts) does not match the head's state trie "
            f"({report.accounts} accounts)")
        return
    check_flat_slots(store, report, {k: rlp.decode(v)[2] for k, v in entries})


def check_flat_slots(store: ChainStore, report: CheckReport, storage_roots: dict[bytes, bytes]) -> None:
    """Each account's slot entries rebuild its storage root; no entries of other accounts.
    One account's entries in memory at a time (they come grouped, in key order)."""
    done: set[bytes] = set()
    current: bytes | None = None
    items: list[tuple[bytes, bytes]] = []

    def finish() -> None:
        if current is None:
            return
        done.add(current)
        if storage_roots.get(current) is None:
            report.problems.append(f"flat storage snapshot has slots of a missing account {current.hex()}")
        elif trie_root_from_sorted(items) != storage_roots[current]:
            report.problems.append(
                f"flat storage snapshot of account {current.hex()} ({len(items)} slots) does "
                "not match its storage trie")

    for key, value in store.db.iterator(prefix=FLAT_SLOT):
        if len(key) != 65 or not value:
            report.problems.append("flat storage snapshot has a malformed entry")
            return
        report.flat_slots += 1
        hashed = key[1:33]
        if hashed != current:
            finish()
            current, items = hashed, []
        items.append((key[33:], value))
    finish()
    missing = [h for h, r in storage_roots.items() if r != BLANK_ROOT_HASH and h not in done]
    if missing:
        report.problems.append(f"flat storage snapshot lacks the slots of {len(missing)} accounts")


def _is_leaf(encoded_path: bytes) -> bool:
    # hex-prefix encoding: flag nibble 2 or 3 marks a leaf, 0 or 1 an extension
    return bool(encoded_path) and (encoded_path[0] >> 4) in (2, 3)
