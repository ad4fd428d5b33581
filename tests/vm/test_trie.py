"""vm.trie against py-trie: the batch writer gives the same roots and readable nodes,
and account storage through FastStorageLookup gives the same state roots as py-evm's
own storage path, including deletions, storage wipes and reverts."""

from __future__ import annotations

import random

import pytest
import rlp
from eth.constants import BLANK_ROOT_HASH
from eth.db.account import AccountDB
from eth.db.atomic import AtomicDB
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trie import HexaryTrie

import vm.trie as trie
from tests.harness import LocalChain
from vm.state import MotusAccountDB, MotusState, make_state
from vm.trie import BLANK_ROOT, TrieNodes, update_trie


class StockAccountDB(MotusAccountDB):
    """MotusAccountDB with py-evm's own storage path (py-trie reads and writes)."""

    _get_address_store = AccountDB._get_address_store


class StockState(MotusState):
    account_db_class = StockAccountDB


def _rand_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def _apply(trie: HexaryTrie, changes: dict[bytes, bytes | None]) -> None:
    for k, v in changes.items():
        if v:
            trie[k] = v
        else:
            del trie[k]


def test_update_trie_matches_py_trie_on_random_tries():
    rng = random.Random(7)
    for _ in range(100):  # (the hypothesis test below covers more shapes)
        db: dict[bytes, bytes] = {}
        trie = HexaryTrie(db)
        keylen = rng.choice([32, 32, 1, 2, 3])  # short keys make embedded nodes
        keys = [_rand_bytes(rng, keylen) for _ in range(rng.choice([0, 1, 2, 7, 60, 300]))]
        for k in keys:
            trie[k] = _rand_bytes(rng, rng.choice([1, 3, 33]))
        root0 = trie.root_hash
        items: dict[bytes, bytes | None] = {}
        for _ in range(rng.choice([1, 2, 9, 120])):
            k = rng.choice(keys) if keys and rng.random() < 0.3 else _rand_bytes(rng, keylen)
            items[k] = None if rng.random() < 0.2 else _rand_bytes(rng, rng.choice([1, 2, 5, 40]))
        root, writes = update_trie(TrieNodes(dict(db)), root0, sorted(items.items()))
        _apply(trie, items)
        assert root == trie.root_hash
        # every node of the new trie is in the old nodes or the new ones: py-trie reads it
        merged = {**db, **writes}
        after = HexaryTrie(merged, root_hash=root)
        for k in list(items) + keys:
            assert after[k] == trie[k]


def test_spliced_branches_give_py_tries_roots_and_nodes():
    """Rounds of replaced values (and a few inserts and deletions) on one trie, the
    writer's partial branches kept with their encodings (TrieNodes.keep_bytes) and their
    changed children's hashes spliced in, one changed key below a branch taken in one
    step (_Writer.one_below): each round's root and new node bytes are py-trie's, and
    every kept encoding is its node's."""
    rng = random.Random(11)
    for keylen, count in ((32, 3_000), (32, 40), (2, 300)):
        db: dict[bytes, bytes] = {}
        reference = HexaryTrie(db)
        keys = [_rand_bytes(rng, keylen) for _ in range(count)]
        for k in keys:
            reference[k] = _rand_bytes(rng, rng.choice([1, 3, 33]))
        root = reference.root_hash
        cache = trie.NodeCache(100_000)
        store = dict(db)
        for round_ in range(6):
            items: dict[bytes, bytes | None] = {}
            for k in rng.sample(keys, min(len(keys), 200)):
                items[k] = _rand_bytes(rng, rng.choice([1, 3, 33]))
            if round_ % 2:  # a few new keys and deletions now and then
                items[_rand_bytes(rng, keylen)] = b"\x01\x02"
                items[rng.choice(keys)] = None
            nodes = TrieNodes(store, cache=cache, keep_bytes=True)
            # the old values (as the slot layers give them) in every other round: the
            # changed leaves then known from them, or else read
            olds = {k: reference[k] for k in items} if round_ % 2 == 0 else None
            root, writes = update_trie(nodes, root, sorted(items.items()), olds)
            _apply(reference, items)
            assert root == reference.root_hash
            assert all(db[h] == encoded for h, encoded in writes.items() if h != root)
            store.update(writes)
            keys = [k for k in keys if items.get(k, b"x")] + [
                k for k, v in items.items() if v and k not in set(keys)]
        kept = [(h, n) for h, n in {**cache.old, **cache.young}.items()
                if n and n[0] == trie.NODE_BRANCH and len(n) == 4]
        assert kept or keylen == 2
        for h, n in kept:
            assert n[3] == trie.encode_node(n[:3]) == store[h]


def test_list_roots_are_py_tries():
    """compute_list_root (keys in order without a sort: 1..127, 0, 128..) against
    py-trie's trie of rlp(index) -> item, across the key lengths' boundaries, with
    items short enough to be embedded and long enough for a two-byte length."""
    rng = random.Random(3)
    for n in (1, 2, 16, 127, 128, 129, 255, 256, 257, 1_000):
        items = [_rand_bytes(rng, rng.choice([1, 2, 30, 60, 300])) for _ in range(n)]
        reference = HexaryTrie({})
        for i, item in enumerate(items):
            reference[rlp.encode(i)] = item
        assert trie.compute_list_root(items) == reference.root_hash
        assert trie.compute_list_root([bytearray(item) for item in items]) == reference.root_hash
    assert trie.compute_list_root([]) == BLANK_ROOT
    with pytest.raises(ValueError):
        trie.compute_list_root([b"a", b""])


def test_decode_node_matches_the_generic_decoder():
    """decode_node (a branch's children read in one loop) against the generic decoder on
    every node of random py-trie tries: short keys (embedded children, branch values),
    31-byte keys and 32-byte values (a leaf whose two items each look like a child hash
    of a branch), one-key tries (the root a leaf)."""
    rng = random.Random(11)
    seen = 0
    for _ in range(120):
        db: dict[bytes, bytes] = {}
        reference = HexaryTrie(db)
        keylen = rng.choice([1, 2, 3, 31, 32, 33])
        for _ in range(rng.choice([1, 2, 5, 40, 200])):
            reference[_rand_bytes(rng, keylen)] = _rand_bytes(rng, rng.choice([1, 2, 31, 32, 40]))
        for encoded in db.values():
            assert trie.decode_node(encoded) == trie._compile(trie.rlp_decode(encoded))
            plain = trie.decode_node(encoded)
            kept = trie.decode_node(encoded, keep_bytes=True)  # (a partial branch: + its bytes)
            partial = (plain[0] == trie._BRANCH and not plain[2] and None in plain[1]
                       and all(c is None or type(c) is bytes for c in plain[1]))  # no embedded
            assert kept == (plain + (encoded,) if partial else plain)
            seen += 1
    assert seen > 5_000


def test_update_trie_of_nothing_keeps_the_root():
    assert update_trie(TrieNodes({}), BLANK_ROOT, []) == (BLANK_ROOT, {})


_key = st.binary(min_size=1, max_size=3) | st.binary(min_size=32, max_size=32)
_value = st.binary(min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.dictionaries(_key, _value, max_size=60),
       changes=st.dictionaries(_key, st.none() | _value, max_size=40),
       deletes=st.sets(st.integers(0, 59), max_size=20),
       one_length=st.booleans())
def test_update_trie_against_hexary_trie(base, changes, deletes, one_length):
    """Random insert, update and delete sets (keys of one length or mixed, so that keys
    end inside the trie: branch values), against py-trie: the same root, the new trie
    readable from the old and new nodes, and py-trie's proofs of it verifying."""
    if one_length:
        base = {k.rjust(32, b"\0"): v for k, v in base.items()}
        changes = {k.rjust(32, b"\0"): v for k, v in changes.items()}
    existing = sorted(base)
    for i in deletes:  # deletes and updates of keys that are there
        if i < len(existing):
            changes[existing[i]] = None
    db: dict[bytes, bytes] = {}
    reference = HexaryTrie(db)
    for k, v in base.items():
        reference[k] = v
    root0 = reference.root_hash
    old_nodes = dict(db)
    root, writes = update_trie(TrieNodes(old_nodes), root0, sorted(changes.items()))
    _apply(reference, changes)
    assert root == reference.root_hash
    built = HexaryTrie({**old_nodes, **writes}, root_hash=root)
    expected = {**base, **changes}
    for k, v in expected.items():
        assert built[k] == (v or b"")
        proof = built.get_proof(k)
        assert HexaryTrie.get_from_proof(root, k, proof) == (v or b"")
    # the same final set built from nothing gives the same root
    final = sorted((k, v) for k, v in expected.items() if v)
    assert update_trie(TrieNodes({}), BLANK_ROOT, final)[0] == root


def _run_storage_script(state_class, seed: int) -> list[object]:
    """Random storage writes (zeros delete), reverts and account wipes over several
    blocks; the state root after each, then every value read in between."""
    rng = random.Random(seed)
    db = AtomicDB()
    chain = LocalChain()
    env = chain.env()
    root = BLANK_ROOT_HASH
    addresses = [bytes([i]) * 20 for i in range(1, 4)]
    roots: list[object] = []
    seen: list[int] = []
    for _ in range(6):
        state = state_class(db, make_state(db, root, env).execution_context, root)
        for _ in range(rng.choice([1, 30, 200])):
            address = rng.choice(addresses)
            action = rng.random()
            if action < 0.05:
                snap = state.snapshot()
                state.set_storage(address, rng.getrandbits(8), rng.getrandbits(64))
                state.revert(snap)
            elif action < 0.07:
                state.delete_storage(address)
            elif action < 0.17:  # a batch (the telemetry commit's), sometimes reverted
                items = [(rng.getrandbits(rng.choice([4, 256])),
                          0 if rng.random() < 0.3 else rng.getrandbits(rng.choice([8, 256])))
                         for _ in range(rng.choice([1, 5, 20]))]
                snap = state.snapshot() if rng.random() < 0.3 else None
                if state_class is MotusState:
                    state.set_storage_many(address, items)
                else:  # the reference: one set_storage each, through py-evm's storage
                    for slot, value in items:
                        state.set_storage(address, slot, value)
                if snap is not None:
                    state.revert(snap)
            else:
                value = 0 if rng.random() < 0.2 else rng.getrandbits(rng.choice([8, 256]))
                state.set_storage(address, rng.getrandbits(rng.choice([4, 256])), value)
            if rng.random() < 0.2:
                state.lock_changes()
            # reads in between see every write
            probe = rng.choice(addresses)
            state.get_storage(probe, rng.getrandbits(4))
            # the committed value too (py-evm's SSTORE gas reads it): same on both paths
            seen.append(state.get_storage(probe, rng.getrandbits(4), from_journal=False))
            seen.append(state.get_storage(probe, rng.getrandbits(4)))
            # and through the block execution's reader (FastAccountStorageDB.read_slot)
            seen.append(state.slot_reader(probe)(rng.getrandbits(rng.choice([4, 256]))))
            # and many at once (FastAccountStorageDB.read_slots: the attestation checks'
            # reads ahead), repeats included
            slots = [rng.getrandbits(rng.choice([4, 256])) for _ in range(rng.choice([1, 3, 9]))]
            seen.extend(state.slots_reader(probe)(slots + slots[:1]))
        state.persist()
        root = state.state_root
        roots.append(root)
    return roots + seen


def test_fast_storage_gives_the_stock_state_roots():
    for seed in range(12):
        assert _run_storage_script(MotusState, seed) == _run_storage_script(StockState, seed)


def test_fast_storage_with_tiny_slot_layers_gives_the_stock_results(monkeypatch):
    """The slot layers' bounds (layers dropped and emptied, chains cut, reads not kept)
    only cost trie walks: the same roots and values read as py-evm's storage path."""
    monkeypatch.setattr(trie, "SLOT_LAYERS_MAX", 3)
    monkeypatch.setattr(trie, "SLOT_LAYERS_MAX_VALUES", 40)
    monkeypatch.setattr(trie, "SLOT_LAYER_DEPTH", 2)
    monkeypatch.setattr(trie, "SLOT_LAYER_MAX_READS", 5)
    trie.clear_slot_layers()
    try:
        for seed in range(4):
            assert _run_storage_script(MotusState, seed) == _run_storage_script(StockState, seed)
            assert len(trie.SLOT_LAYERS) <= 3
            held = sum(len(layer.values) for layer in trie.SLOT_LAYERS.values())
            assert held <= 40 + 200
            assert trie._layer_values == held  # (reads counted without the lock: exact
            # in one thread)
    finally:
        trie.clear_slot_layers()


def test_a_storage_root_seen_again_reads_right():
    """A block that takes a storage trie back to an older root (a slot set, then unset):
    the layers never form a loop, and every value read is the trie's."""
    trie.clear_slot_layers()
    db = AtomicDB()
    env = LocalChain().env()
    address = b"\x07" * 20
    root = BLANK_ROOT_HASH
    for value in (1, 2, 1, 0, 1, 2):
        state = make_state(db, root, env)
        assert state.get_storage(address, 1) in (0, 1, 2)
        state.set_storage(address, 1, value)
        state.set_storage(address, 2, 5)
        state.persist()
        root = state.state_root
        after = make_state(db, root, env)
        assert after.get_storage(address, 1) == value
        assert after.get_storage(address, 2) == 5
        assert after.get_storage(address, 3) == 0  # a miss in every layer: ends, reads 0


def test_node_cache_evicts_a_generation_never_everything():
    """Two generations: the bound holds, an entry used since the last turn survives the
    next one, an unused one goes after two turns, and nothing empties the cache whole."""
    cache = trie.NodeCache(8)  # generations of 4
    for i in range(4):
        cache.put(bytes([i]), i)
    assert len(cache.young) == 0 and len(cache.old) == 4  # turned old, all still there
    assert cache.get(b"\x00") == 0  # used again: moved into the young generation
    for i in range(4, 7):
        cache.put(bytes([i]), i)
    assert cache.get(b"\x00") == 0 and b"\x01" not in cache  # survived; 1 went unused
    assert all(bytes([i]) in cache for i in range(4, 7))
    for i in range(100, 200):
        cache.put(bytes([i]), i)
        assert 0 < len(cache) <= 8
    assert cache.room() == 4 - len(cache.young)
    cache.clear()
    assert len(cache) == 0 and cache.get(b"\x00") is None


def test_fast_storage_with_a_tiny_shared_node_cache_gives_the_stock_results(monkeypatch):
    """Evictions of decoded nodes in the middle of blocks only cost decoding: the same
    roots and values read as py-evm's storage path."""
    monkeypatch.setattr(trie, "SHARED_NODES", trie.NodeCache(6))
    trie.clear_slot_layers()
    try:
        for seed in range(4):
            assert _run_storage_script(MotusState, seed) == _run_storage_script(StockState, seed)
            assert len(trie.SHARED_NODES) <= 6
    finally:
        trie.clear_slot_layers()


def test_slot_layer_reads_from_threads_keep_the_bounds(monkeypatch):
    """Reads are remembered without the lock: threads reading into layers while another
    writes (and so drops layers) raise nothing, stay near the bounds, and the count is
    exact again after the next block's writes."""
    import threading

    monkeypatch.setattr(trie, "SLOT_LAYERS_MAX", 8)
    monkeypatch.setattr(trie, "SLOT_LAYERS_MAX_VALUES", 2_000)
    trie.clear_slot_layers()
    roots = [bytes([i]) * 32 for i in range(12)]
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(20_000):
                trie._remember_read(rng.choice(roots), rng.getrandbits(64).to_bytes(8, "big"), b"\x01")
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    def writer() -> None:
        rng = random.Random(99)
        try:
            for i in range(300):
                trie._remember_writes(rng.choice(roots), rng.choice(roots),
                                      {i.to_bytes(4, "big"): b"\x02"})
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=writer))
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and not any(t.is_alive() for t in threads)
        assert len(trie.SLOT_LAYERS) <= 8
        held = sum(len(layer.values) for layer in trie.SLOT_LAYERS.values())
        assert held <= 2_000 + 100
        trie._remember_writes(roots[0], roots[1], {b"last": b"\x03"})
        assert trie._layer_values == sum(len(layer.values) for layer in trie.SLOT_LAYERS.values())
    finally:
        trie.clear_slot_layers()


def test_storage_nodes_reach_a_block_overlay_in_one_call():
    """Over a block's OverlayDB the new storage trie nodes skip py-evm's write batch
    (OverlayDB.put_many): every node of the new tries is in the overlay's puts, py-trie
    reads every slot back from them, and a second state on the new root reads the same."""
    from vm.crypto import keccak256
    from vm.db import OverlayDB

    base = AtomicDB()
    chain = LocalChain()
    env = chain.env()
    overlay = OverlayDB(base)
    state = make_state(overlay, BLANK_ROOT_HASH, env)
    rng = random.Random(5)
    address = b"\x07" * 20
    written = {rng.getrandbits(256): rng.getrandbits(64) + 1 for _ in range(300)}
    state.set_storage_many(address, list(written.items()))
    state.persist()
    puts, _ = overlay.pending()
    storage_root = state._account_db._get_storage_root(address)
    trie_ = HexaryTrie(puts, root_hash=storage_root)
    for slot, value in written.items():
        assert trie_[keccak256(slot.to_bytes(32, "big"))] == rlp.encode(value)
    again = make_state(overlay, state.state_root, env)
    assert all(again.get_storage(address, slot) == value for slot, value in written.items())


def _reachable(db: dict[bytes, bytes], root: bytes) -> set[bytes]:
    """Hashes of the stored nodes the trie at ``root`` names (embedded ones are inside)."""
    seen: set[bytes] = set()
    todo = [root]
    while todo:
        ref = todo.pop()
        if ref in seen or ref == BLANK_ROOT:
            continue
        seen.add(ref)
        stack = [trie.decode_node(db[ref])]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            children = node[1] if node[0] == trie.NODE_BRANCH else (
                [node[2]] if node[0] == trie.NODE_EXTENSION else [])
            for child in children:
                if type(child) is bytes:
                    todo.append(child)
                elif child is not None:
                    stack.append(child)
    return seen


def test_update_trie_writes_only_the_new_trie_and_old_values_change_nothing():
    """The writer seals each new node where it is final: it writes exactly nodes of the new
    trie (none left unreachable), and handing it the changed keys' old values (right ones,
    wrong ones, missing ones) changes neither the root nor the nodes written."""
    rng = random.Random(23)
    for _ in range(150):
        db: dict[bytes, bytes] = {}
        reference = HexaryTrie(db)
        keylen = rng.choice([32, 32, 32, 1, 2])
        keys = [_rand_bytes(rng, keylen) for _ in range(rng.choice([1, 2, 7, 60, 400]))]
        for k in keys:
            reference[k] = _rand_bytes(rng, rng.choice([1, 3, 33]))
        root0 = reference.root_hash
        old_nodes = dict(db)
        items: dict[bytes, bytes | None] = {}
        deleting = rng.random() < 0.5
        for _ in range(rng.choice([1, 2, 9, 120])):
            k = rng.choice(keys) if rng.random() < 0.7 else _rand_bytes(rng, keylen)
            items[k] = (None if deleting and rng.random() < 0.2
                        else _rand_bytes(rng, rng.choice([1, 2, 5, 33, 40])))
        olds = {k: (reference[k] if rng.random() < 0.8 else b"\x01wrong")
                for k in items if reference[k]}
        changes = sorted(items.items())
        root, writes = update_trie(TrieNodes(dict(old_nodes)), root0, changes)
        with_olds = update_trie(TrieNodes(dict(old_nodes)), root0, changes, olds)
        _apply(reference, items)
        assert root == reference.root_hash == with_olds[0]
        assert writes == with_olds[1]
        assert set(writes) <= _reachable({**old_nodes, **writes}, root)
