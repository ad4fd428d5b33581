"""Block sync's rules about what peers claim, in process (no sockets): which head
heights are believable, and which block announcements are relayed, ignored or banned
(``NetworkService._check_announce``, docs/network.md "Block sync"); and which consensus
messages outside the heights being decided are penalised (``_check_consensus``, docs/network.md
"Consensus messages on gossip"), with real keys and signatures."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from types import SimpleNamespace
from typing import Any

import pytest
import rlp
import trio

from consensus.messages import ProposalMessage, encode_message
from consensus.types import PRECOMMIT, PREVOTE, Vote
from consensus.wal import Signer, SigningGuard
from node.app import MAX_CLOCK_DRIFT_MS
from node.network import (
    ANNOUNCE_RELAY_LEAD,
    RELAYED_VOTE_REPAIR_S,
    NetworkService,
    compute_max_plausible_height,
)
from p2p.host import Verdict
from tests.consensus.helpers import CHAIN_ID, KEYS, validator_set

HEAD = 100


def test_no_chain_outruns_one_block_per_millisecond() -> None:
    now_ms = 1_700_000_000_000
    assert compute_max_plausible_height(HEAD, now_ms - 5_000, now_ms) == (
        HEAD + 5_000 + MAX_CLOCK_DRIFT_MS)
    # A head dated in the future (clock skew) still allows the drift, never less than ours.
    assert compute_max_plausible_height(HEAD, now_ms + 60_000, now_ms) == HEAD
    # The lying peer of issue 10 claimed 2**62: a head timestamp would have to be
    # 146 million years ahead of ours.
    assert compute_max_plausible_height(HEAD, 0, now_ms) < 2**62


class FakeService:
    """What ``_check_announce`` reads: our head (height, timestamp) and the sync trigger."""

    def __init__(self, head_age_s: float = 10.0) -> None:
        head = SimpleNamespace(height=HEAD, timestamp_ms=int((time.time() - head_age_s) * 1000))
        self.store = SimpleNamespace(head_height=HEAD, head=head)
        self._sync_wanted = trio.Event()

    def _max_plausible_height(self) -> int:
        return NetworkService._max_plausible_height(self)  # type: ignore[arg-type]

    def check(self, data: bytes) -> Verdict:
        return NetworkService._check_announce(self, "forwarder", data)  # type: ignore[arg-type]


def announce(height: int) -> bytes:
    return rlp.encode([height, b"\x11" * 32])


@pytest.mark.parametrize(
    ("height", "verdict", "wakes_sync"),
    [
        (HEAD - ANNOUNCE_RELAY_LEAD - 1, Verdict.IGNORE, False),  # old news
        (HEAD - 1, Verdict.ACCEPT, False),
        (HEAD, Verdict.ACCEPT, False),  # we decided it too
        (HEAD + 1, Verdict.ACCEPT, False),  # we are about to decide it
        (HEAD + ANNOUNCE_RELAY_LEAD, Verdict.ACCEPT, True),  # we are behind: sync
        (HEAD + ANNOUNCE_RELAY_LEAD + 1, Verdict.IGNORE, True),  # far ahead: a hint only
        (HEAD + 5_000, Verdict.IGNORE, True),  # 10 s of blocks at 1 ms: still possible
        (2**62, Verdict.IGNORE, False),  # no chain gets there: not even a hint
    ],
)
def test_announcements_far_ahead_are_not_relayed(height: int, verdict: Verdict,
                                                 wakes_sync: bool) -> None:
    service = FakeService()
    assert service.check(announce(height)) is verdict
    assert service._sync_wanted.is_set() is wakes_sync


@pytest.mark.parametrize("data", [b"", b"\xc1garbage", rlp.encode([1]), rlp.encode([[1], b"x"]),
                                  rlp.encode([1, b"short hash"])])
def test_undecodable_announcements_ban_their_sender(data: bytes) -> None:
    assert FakeService().check(data) is Verdict.MALFORMED


def test_undecodable_consensus_messages_ban_their_sender() -> None:
    # A message that fails to decode never reaches the checks that read our state (only
    # the memo of bytes accepted before, which holds none of these).
    service = SimpleNamespace(_accepted_messages={}, _accepted_compacts={})
    for data in (b"\xc1garbage", rlp.encode([b"\x09", b"unknown tag"]), b"\x80" * 100):
        verdict = NetworkService._check_consensus(service, "forwarder", data)  # type: ignore[arg-type]
        assert verdict is Verdict.MALFORMED


@pytest.mark.parametrize(("failures", "pause", "penalised"), [
    # the peer's doing: left out 60 s, doubling per failure in a row
    (["sync_unbacked_head"], 60, ["sync_unbacked_head"]),
    (["sync_timeout", "sync_timeout", "sync_timeout"], 240, ["sync_timeout"] * 3),
    (["sync_bad_block"], 60, []),  # penalised where the block was checked
    # not its doing (a lost connection, an error answer): skipped briefly, no strike
    (["failed: peer_unreachable: gone", "failed: remote_error: busy"], 5, []),
])
def test_only_a_peers_own_sync_failures_keep_it_out_for_long(
    failures: list[str], pause: float, penalised: list[str],
) -> None:
    penalties: list[str] = []
    service = SimpleNamespace(
        p2p=SimpleNamespace(penalise=lambda peer, reason: penalties.append(str(reason))),
        _sync_strikes={}, _sync_excluded={})
    for failure in failures:
        NetworkService._sync_failed(service, "peer", 500, failure)  # type: ignore[arg-type]
    left_out_for = service._sync_excluded["peer"] - time.monotonic()
    assert pause - 1 < left_out_for <= pause
    assert penalties == penalised


# --- consensus messages outside the heights being decided ------------------------------

OLDEST_STORED = HEAD - 50  # a pruned store: no validator set below this height
OUTSIDER_KEY = b"\x42" * 32  # signs as itself, not a member of any set


class ConsensusTopic:
    """What ``_check_consensus`` reads: our head, the validator sets we hold (heights
    OLDEST_STORED to HEAD + 1), and the machine's round."""

    _is_forged = NetworkService._is_forged
    _is_signed_by_set = NetworkService._is_signed_by_set
    _proposer = NetworkService._proposer
    _validators_to_check = NetworkService._validators_to_check

    def __init__(self) -> None:
        validators = validator_set()
        self.chain_id = CHAIN_ID
        self.store = SimpleNamespace(
            head_height=HEAD, decided_height=HEAD,
            validators_for=lambda h: validators if OLDEST_STORED <= h <= HEAD + 1 else None)
        self.machine = SimpleNamespace(round=0)
        self._proposers: dict[tuple[int, int], bytes] = {}
        self._check_validators: OrderedDict[int, Any] = OrderedDict()
        self._consensus_decoded: OrderedDict[bytes, Any] = OrderedDict()
        self._relayed_votes: OrderedDict[bytes, float] = OrderedDict()
        self._accepted_messages: OrderedDict[bytes, Any] = OrderedDict()
        self.published: list[bytes] = []
        self.runner = SimpleNamespace(stats=Counter())

        async def publish(topic: str, data: bytes) -> None:
            self.published.append(data)

        self.p2p = SimpleNamespace(publish=publish)

    def check(self, data: bytes) -> Verdict:
        return NetworkService._check_consensus(self, "forwarder", data)  # type: ignore[arg-type]

    def broadcast(self, data: bytes) -> None:
        trio.run(NetworkService._broadcast, self, data)  # type: ignore[arg-type]


def signed_vote(key: bytes, height: int, round_: int = 0, vote_type: int = PREVOTE) -> Vote:
    return Signer(key, CHAIN_ID, SigningGuard()).sign_vote(vote_type, height, round_, b"\x11" * 32)


def forged_vote(height: int, round_: int = 0) -> bytes:
    """A well-formed vote naming validator 0, signed by another key (validator 1)."""
    vote = signed_vote(KEYS[1], height, round_)
    named = signed_vote(KEYS[0], 1).validator
    return encode_message(Vote(vote.type, vote.height, vote.round, vote.block_hash, named,
                               vote.signature))


@pytest.mark.parametrize("height", [
    HEAD - 60,  # older than every set we hold
    HEAD - 9, HEAD - 1,  # passed: what a loaded node sees of a vote sent for the current height
    HEAD, HEAD + 1,  # being decided
    HEAD + 3, 2**40,  # ahead of us: no set to check the signer against
])
def test_a_forged_vote_is_rejected_at_any_height(height: int) -> None:
    # Under load a forged vote sent for the current height reached validators 1-9
    # heights later and was dropped unchecked: its forger was never banned.
    assert ConsensusTopic().check(forged_vote(height)) is Verdict.REJECT


def test_a_forged_vote_is_rejected_at_any_round() -> None:
    assert ConsensusTopic().check(forged_vote(HEAD + 1, round_=10_000)) is Verdict.REJECT


def test_a_forged_proposal_is_rejected_outside_the_heights_being_decided() -> None:
    topic = ConsensusTopic()
    for height in (HEAD - 3, HEAD + 5):
        proposer = topic._proposer(validator_set(), height, 0)
        impostor = next(k for k in KEYS if Signer(k, CHAIN_ID, SigningGuard()).address != proposer)
        proposal = Signer(impostor, CHAIN_ID, SigningGuard()).sign_proposal(
            height, 0, -1, b"\x22" * 32)
        forged = proposal.copy(proposer=proposer)
        assert topic.check(encode_message(ProposalMessage(forged, b"block"))) is Verdict.REJECT


@pytest.mark.parametrize(("height", "verdict"), [
    (HEAD - 60, Verdict.IGNORE),  # no set to say it is not a member
    (HEAD - 1, Verdict.REJECT),  # the set we hold says it is not
    (HEAD + 1, Verdict.REJECT),
    (HEAD + 3, Verdict.IGNORE),
])
def test_a_vote_by_a_non_member_is_rejected_where_the_set_is_known(height: int,
                                                                   verdict: Verdict) -> None:
    assert ConsensusTopic().check(encode_message(signed_vote(OUTSIDER_KEY, height))) is verdict


@pytest.mark.parametrize(("height", "verdict"), [
    (HEAD - 60, Verdict.IGNORE),
    (HEAD - 2, Verdict.IGNORE),  # late: checked, not relayed, never penalised
    (HEAD, Verdict.ACCEPT),
    (HEAD + 1, Verdict.ACCEPT),
    (HEAD + 2, Verdict.IGNORE),  # ahead of us: not relayed, never penalised
])
def test_a_genuine_vote_is_never_penalised(height: int, verdict: Verdict) -> None:
    for vote_type in (PREVOTE, PRECOMMIT):
        vote = signed_vote(KEYS[2], height, vote_type=vote_type)
        assert ConsensusTopic().check(encode_message(vote)) is verdict


def test_a_peers_vote_gossip_just_relayed_is_not_published_again_for_a_period() -> None:
    # The machine re-sends the prevotes behind its valid value on every tick; gossip relayed
    # each of them to our mesh when our check accepted it (docs/network.md).
    topic = ConsensusTopic()
    relayed = encode_message(signed_vote(KEYS[2], HEAD + 1))
    assert topic.check(relayed) is Verdict.ACCEPT
    own = encode_message(signed_vote(KEYS[0], HEAD + 1, vote_type=PRECOMMIT))
    topic.broadcast(relayed)
    topic.broadcast(own)
    assert topic.published == [own]
    assert topic.runner.stats["relayed_vote_not_repeated"] == 1
    topic._relayed_votes[relayed] -= RELAYED_VOTE_REPAIR_S  # a period later: repaired as before
    topic.broadcast(relayed)
    assert topic.published == [own, relayed]


def test_a_resent_vote_is_decoded_once_and_checked_again() -> None:
    topic = ConsensusTopic()
    vote = encode_message(signed_vote(KEYS[2], HEAD + 1))
    assert topic.check(vote) is Verdict.ACCEPT
    assert vote in topic._accepted_messages
    topic.store.head_height = topic.store.decided_height = HEAD + 2  # the height passed:
    # the same bytes are judged anew
    assert topic.check(vote) is Verdict.IGNORE
    assert topic.check(forged_vote(HEAD + 1)) is Verdict.REJECT  # never remembered
    assert forged_vote(HEAD + 1) not in topic._accepted_messages


def test_a_vote_for_the_next_height_is_taken_while_the_decided_block_is_written() -> None:
    # Block HEAD + 1 is decided and being written (ChainStore.staged: the head is still
    # HEAD, the set of HEAD + 2 is the decided one): a vote for HEAD + 2, which the
    # others send once they have committed, is the next height's, not one too far ahead
    # (it was IGNOREd, and pubsub drops every copy of an IGNOREd message).
    topic = ConsensusTopic()
    validators = validator_set()
    vote = encode_message(signed_vote(KEYS[2], HEAD + 2))
    assert topic.check(vote) is Verdict.IGNORE  # before the decision
    topic.store.decided_height = HEAD + 1
    topic.store.validators_for = lambda h: validators if OLDEST_STORED <= h <= HEAD + 2 else None
    topic._check_validators.clear()
    assert topic.check(vote) is Verdict.ACCEPT
