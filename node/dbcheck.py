"""``motus db check``: walk the head's state trie from its root, checking that every node
is present and hashes to its reference, every account's storage trie likewise, and
every contract's code is present. Also checks the head block and its indexes agree; on a
node that prunes (node.prune), the oldest state it claims to keep, walked the same way
without entering the (large) subtrees the head's walk checked; and that the flat state snapshot
holds exactly the head's accounts and storage slots: the trie root rebuilt from all its
account entries must equal the head's state root, and the root rebuilt from each
account's slot entries its storage root (a full check, not a sample).

Memory is bounded whatever the size of the state (docs/storage.md, "Checking"): the walk
is depth-first (a stack of the open nodes' children); the roots rebuilt from the flat
snapshot are computed from its entries as LevelDB yields them, ``vm.flat.ROOT_CHUNK``
at a time; and the hashes the oldest state's walk may skip are those of the nodes whose
subtree held at least :data:`SKIP_MIN_NODES` nodes, at most :data:`MAX_SKIP_HASHES` of
them."""

from __future__ import annotations

from dataclasses import dataclass, field

import rlp
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3
from eth_hash.auto import keccak

from node.db import FLAT_ACCOUNT, FLAT_SLOT
from node.store import ChainStore
from vm.flat import trie_root_from_sorted
from vm.trie import rlp_decode

SKIP_MIN_NODES = 64
"""The head's walk remembers a node's hash, for the oldest state's walk to skip, only when
the node's subtree (its storage tries included) held at least this many nodes: ~1 hash
in 370 nodes on a large state (the parents of leaves hold ~17 nodes, theirs ~270) instead
of every one, and an unchanged subtree that is not remembered costs the oldest state's
walk fewer than this many nodes checked again."""
MAX_SKIP_HASHES = 2_000_000
"""At most this many hashes remembered (~200 MB), whatever the state: past it a subtree
is only checked again, never skipped unchecked."""


@dataclass
class CheckReport:
    head: int
    state_root: bytes
    nodes: int = 0
    accounts: int = 0
    storage_slots: int = 0
    oldest_state: int = 0  # the lowest height whose state is kept (checked too when below the head)
    oldest_nodes: int = 0  # nodes the oldest state's walk checked (it skips what the head's remembered)
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
    # roots of subtrees the head's walk verified whole (large ones: SKIP_MIN_NODES)
    checked: set[bytes] = set()
    skip_checked = False  # set for the oldest state's walk

    def walk(root: bytes, on_leaf) -> None:
        if root == BLANK_ROOT_HASH:
            return
        # a node's children, and below them a tuple (its hash, report.nodes before it):
        # popped once its whole subtree has been walked
        stack: list[bytes | list | tuple[bytes, int]] = [root]
        while stack and len(report.problems) < max_problems:
            ref = stack.pop()
            if type(ref) is tuple:
                digest, before = ref
                if (not skip_checked and report.nodes - before >= SKIP_MIN_NODES
                        and len(checked) < MAX_SKIP_HASHES):
                    checked.add(digest)
                continue
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
                stack.append((ref, report.nodes))
                report.nodes += 1
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
            report.oldest_nodes = report.nodes - counts[0]
            report.nodes, report.accounts, report.storage_slots = counts
    check_flat_state(store, report)
    return report


def check_flat_state(store: ChainStore, report: CheckReport) -> None:
    """The flat snapshot's marker names the head's state root, and its entries are the
    head's accounts, no more, no fewer, same bytes: the root of a trie built from them
    is the head's state root. The entries are read as LevelDB yields them, never all
    held (vm.flat.trie_root_from_sorted)."""
    marker = store.state_db.flat.root
    if marker is None:
        report.flat_state = "absent"
        return
    if marker != report.state_root:
        report.problems.append(f"flat account snapshot is of state root {marker.hex()}, not the head's")
        return
    malformed: list[bool] = []
    with_storage = [0]  # accounts whose storage root is not the empty trie's

    def entries():
        for key, value in store.db.iterator(prefix=FLAT_ACCOUNT):
            storage_root = _storage_root(value) if len(key) == 33 else None
            if storage_root is None:
                malformed.append(True)
                return
            report.flat_accounts += 1
            if storage_root != BLANK_ROOT_HASH:
                with_storage[0] += 1
            yield key[1:], value

    root = trie_root_from_sorted(entries())
    if malformed:
        report.problems.append("flat account snapshot has a malformed entry")
        return
    if root != report.state_root:
        report.problems.append(
            f"flat account snapshot ({report.flat_accounts} accounts) does not match the head's state trie "
            f"({report.accounts} accounts)")
        return
    check_flat_slots(store, report, with_storage[0])


def check_flat_slots(store: ChainStore, report: CheckReport, with_storage: int) -> None:
    """Each account's slot entries rebuild its storage root (the flat account entry's,
    which the caller checked is the trie's); no entries of other accounts; and as many
    accounts have slot entries as ``with_storage`` accounts have a non-empty storage
    root, so none lacks them. The entries come grouped by account, in key order, and
    are read as LevelDB yields them, never a whole account's at once: an account of
    millions of slots (the fleet's identity module) costs no more memory than a small
    one."""
    db = store.db
    entries = db.iterator(prefix=FLAT_SLOT)
    pending: list[tuple[bytes, bytes]] = []  # the next account's first entry, once read
    malformed = False
    seen = 0  # accounts with a non-empty storage root that have slot entries

    def slots_of(account: bytes):
        """Yield (hashed slot, value) of ``account``'s entries; stop at the next account's
        first entry (left in ``pending``) or the end."""
        nonlocal malformed
        while True:
            if pending:
                key, value = pending.pop()
            else:
                item = next(entries, None)
                if item is None:
                    return
                key, value = item
            if len(key) != 65 or not value:
                malformed = True
                return
            if key[1:33] != account:
                pending.append((key, value))
                return
            report.flat_slots += 1
            yield key[33:], value

    while not malformed:
        if not pending:
            first = next(entries, None)
            if first is None:
                break
            pending.append(first)
        key = pending[-1][0]
        if len(key) != 65:
            malformed = True
            break
        account = key[1:33]
        counted = report.flat_slots
        root = trie_root_from_sorted(slots_of(account))
        if malformed:
            break
        raw = db.get(FLAT_ACCOUNT + account)
        expected = None if raw is None else _storage_root(raw)
        if expected is None:
            report.problems.append(f"flat storage snapshot has slots of a missing account {account.hex()}")
        else:
            if expected != BLANK_ROOT_HASH:
                seen += 1
            if root != expected:
                report.problems.append(
                    f"flat storage snapshot of account {account.hex()} ({report.flat_slots - counted} slots) "
                    "does not match its storage trie")
    if malformed:
        report.problems.append("flat storage snapshot has a malformed entry")
        return
    if seen < with_storage:
        report.problems.append(f"flat storage snapshot lacks the slots of {with_storage - seen} accounts")


def _storage_root(account_rlp: bytes) -> bytes | None:
    """The storage root of an account's RLP; None if it is not an account (a wrong but
    well-formed one fails the root comparison)."""
    try:
        fields = rlp_decode(account_rlp)  # the fast decoder: one call per account
    except (IndexError, ValueError, RecursionError):
        return None
    if type(fields) is not list or len(fields) != 4 or type(fields[2]) is not bytes:
        return None
    return fields[2]


def _is_leaf(encoded_path: bytes) -> bool:
    # hex-prefix encoding: flag nibble 2 or 3 marks a leaf, 0 or 1 an extension
    return bool(encoded_path) and (encoded_path[0] >> 4) in (2, 3)
