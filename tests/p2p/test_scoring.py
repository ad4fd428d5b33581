"""Our peer scoreboard (bans, decay) and the gossipsub scorer settings."""

from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2p.scoring import (
    Misbehaviour,
    PeerScoreboard,
    RouterScorer,
    ScoreConfig,
    gossipsub_score_params,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_penalties_ban_at_threshold_then_expire() -> None:
    clock = FakeClock()
    board = PeerScoreboard(ScoreConfig(ban_threshold=-100, ban_seconds=60), clock)
    assert [board.penalise("p", Misbehaviour.INVALID_MESSAGE) for _ in range(5)] == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert board.is_banned("p") and board.banned_peers() == ["p"]
    assert board.ban_remaining("p") == pytest.approx(60)
    snapshot = board.snapshot()["p"]
    assert snapshot.bans == 1 and snapshot.penalties == {"invalid_message": 5}
    assert not board.penalise("p", Misbehaviour.INVALID_MESSAGE)  # no extension while banned
    clock.now += 61
    assert not board.is_banned("p") and board.banned_peers() == []
    assert not board.is_banned("never-seen") and board.score("never-seen") == 0


def test_repeat_offenders_get_doubled_bans_capped() -> None:
    clock = FakeClock()
    config = ScoreConfig(ban_threshold=-10, ban_seconds=60, max_ban_seconds=200)
    board = PeerScoreboard(config, clock)
    durations = []
    for _ in range(4):
        assert board.penalise("p", "anything")  # unknown reasons weigh 20
        durations.append(board.ban_remaining("p"))
        clock.now += 1000
    assert durations == [60, 120, 200, 200]


def test_scores_recover_with_half_life() -> None:
    clock = FakeClock()
    board = PeerScoreboard(ScoreConfig(half_life=100), clock)
    board.penalise("p", Misbehaviour.OVER_BUDGET)
    assert board.score("p") == pytest.approx(-25)
    clock.now += 100
    assert board.score("p") == pytest.approx(-12.5)
    clock.now += 10_000
    assert board.score("p") == 0


def test_what_no_honest_peer_sends_bans_at_once() -> None:
    board = PeerScoreboard(ScoreConfig(), FakeClock())
    for reason in (Misbehaviour.MALFORMED_MESSAGE, Misbehaviour.OVERSIZE_MESSAGE,
                   Misbehaviour.SYNC_IMPLAUSIBLE_HEAD, Misbehaviour.WRONG_CHAIN):
        assert board.penalise(f"peer-{reason}", reason), reason
    # Failing to back a claimed head, or a block that fails verification: the second.
    for reason in (Misbehaviour.SYNC_UNBACKED_HEAD, Misbehaviour.SYNC_BAD_BLOCK):
        assert not board.penalise(f"peer-{reason}", reason)
        assert board.penalise(f"peer-{reason}", reason)
    # Honest peers can be slow or late: those take many.
    assert not any(board.penalise("slow", Misbehaviour.SYNC_TIMEOUT) for _ in range(9))


def test_router_scorer_counts_only_attributed_rejections() -> None:
    peer = ID.from_pubkey(create_new_key_pair().public_key)
    scorer = RouterScorer(gossipsub_score_params())
    scorer.on_invalid_message(peer, "t")  # pubsub's call: IGNORE, timeouts, cache hits
    assert scorer.score(peer, ["t"]) == 0
    scorer.record_rejected(peer, "t")
    assert scorer.score(peer, ["t"]) == -10
    params = gossipsub_score_params()
    assert params.p7_ip_colocation_weight == 0
    assert params.p4_invalid_messages.weight > 0 and params.p4_invalid_messages.cap > 0


def test_table_is_bounded_and_keeps_banned_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2p.scoring.MAX_TRACKED_PEERS", 100)
    clock = FakeClock()
    board = PeerScoreboard(ScoreConfig(ban_threshold=-10), clock)
    board.penalise("villain", "x")
    for i in range(300):
        board.penalise(f"p{i}", Misbehaviour.REQUEST_FLOOD)  # -5: not banned
    assert len(board.snapshot()) <= 100
    assert board.is_banned("villain")


def test_totals_never_go_down_when_records_are_evicted(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Metrics export the totals as counters: evicting an old peer's record (the table is
    bounded) must not lower them, or Prometheus reads a reset."""
    import p2p.scoring as scoring

    monkeypatch.setattr(scoring, "MAX_TRACKED_PEERS", 10)
    board = scoring.PeerScoreboard(scoring.ScoreConfig())
    for i in range(50):
        board.penalise(f"p{i}", scoring.Misbehaviour.MALFORMED_MESSAGE)  # bans at once
    assert len(board.snapshot()) <= 10
    assert board.bans_total == 50
    assert board.penalties_total == {"malformed_message": 50}
