"""`AuthFailures`, the per-peer count of failed authentications and the lock-out of a
peer that guesses tokens, on a fake clock; and `peer_address`, the peer of gRPC's
`context.peer()`."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.server import auth
from orchestrator.server.auth import AuthFailures, peer_address


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failures(clock: FakeClock, **kwargs: float) -> AuthFailures:
    return AuthFailures(clock=clock, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:54321", "127.0.0.1"),
        ("ipv6:[::1]:5432", "::1"),
        ("ipv6:%5B::1%5D:5432", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("unix:/tmp/inflection.sock", "unix:/tmp/inflection.sock"),
    ],
)
def test_the_peer_is_its_address_without_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_ten_failures_within_a_minute_lock_a_peer_out_for_a_minute() -> None:
    clock = FakeClock()
    throttle = failures(clock)
    for _ in range(9):
        assert throttle.failed("10.0.0.1") is None
        clock.now += 1
    assert throttle.locked_out("10.0.0.1") is None
    assert throttle.failed("10.0.0.1") == 60  # the tenth starts the lock-out
    assert throttle.locked_out("10.0.0.1") == 60
    assert throttle.locked_out("10.0.0.2") is None  # another peer is not affected
    clock.now += 59.5
    assert throttle.locked_out("10.0.0.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert throttle.locked_out("10.0.0.1") is None
    assert not throttle.anyone_locked_out()


def test_failures_spread_wider_than_the_window_never_lock_out() -> None:
    clock = FakeClock()
    throttle = failures(clock)
    for _ in range(100):
        assert throttle.failed("10.0.0.1") is None
        clock.now += 6.67  # the first and the tenth are just over a minute apart
    assert throttle.locked_out("10.0.0.1") is None


def test_each_further_lock_out_is_twice_as_long_up_to_the_cap() -> None:
    clock = FakeClock()
    throttle = failures(clock)
    lengths = []
    for _ in range(7):
        for _ in range(9):
            assert throttle.failed("10.0.0.1") is None
        lockout = throttle.failed("10.0.0.1")
        assert lockout is not None
        lengths.append(lockout)
        clock.now += lockout
    assert lengths == [60, 120, 240, 480, 900, 900, 900]


def test_a_peer_quiet_for_the_longest_lock_out_starts_afresh() -> None:
    clock = FakeClock()
    throttle = failures(clock)
    for _ in range(10):
        throttle.failed("10.0.0.1")
    clock.now += 60 + 900
    for _ in range(9):
        assert throttle.failed("10.0.0.1") is None
    assert throttle.failed("10.0.0.1") == 60  # not 120


def test_attempts_during_a_lock_out_are_not_counted() -> None:
    clock = FakeClock()
    throttle = failures(clock)
    for _ in range(10):
        throttle.failed("10.0.0.1")
    for _ in range(100):
        assert throttle.failed("10.0.0.1") is None
    clock.now += 60
    for _ in range(9):
        assert throttle.failed("10.0.0.1") is None  # a fresh ten after the lock-out
    assert throttle.failed("10.0.0.1") == 120


def test_memory_is_bounded_and_the_peer_failing_longest_ago_is_forgotten() -> None:
    clock = FakeClock()
    throttle = failures(clock, max_peers=3, max_failures=2)
    throttle.failed("a")
    for peer in ("b", "c", "a", "d"):  # "a" failed again: "b" is now the oldest
        clock.now += 1
        throttle.failed(peer)
    assert list(throttle._peers) == ["c", "a", "d"]
    assert throttle.locked_out("a") is not None  # its two failures were both kept


def test_a_failure_is_logged_per_peer_at_most_every_ten_seconds_and_a_lock_out_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=auth.__name__)
    clock = FakeClock()
    throttle = failures(clock)
    for _ in range(10):
        throttle.record("10.0.0.1", "/inflection.v1.Orchestrator/Run", "invalid bearer token")
    throttle.record("10.0.0.2", "POST /v1/completions", "no token")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            logging.WARNING,
            "failed authentication from 10.0.0.1 on /inflection.v1.Orchestrator/Run: "
            "invalid bearer token",
        ),
        (
            logging.WARNING,
            "10.0.0.1 locked out for 60 s after 10 failed authentications within 60 s",
        ),
        (logging.WARNING, "failed authentication from 10.0.0.2 on POST /v1/completions: no token"),
    ]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=120, allow_nan=False), max_size=300),
    peers=st.lists(st.sampled_from("abcde"), min_size=300, max_size=300),
)
def test_no_peer_gets_more_than_ten_guesses_in_any_minute(
    gaps: list[float], peers: list[str]
) -> None:
    # Whatever the timing and interleaving, the failures of a peer that were counted
    # (not refused as locked out) number at most max_failures within any window_s.
    clock = FakeClock()
    throttle = failures(clock)
    counted: dict[str, list[float]] = {}
    for gap, peer in zip(gaps, peers, strict=False):
        clock.now += gap
        if throttle.locked_out(peer) is None:
            throttle.failed(peer)
            counted.setdefault(peer, []).append(clock.now)
    for times in counted.values():
        for i, start in enumerate(times):
            assert len([t for t in times[i:] if t - start < 60]) <= 10


@settings(max_examples=100, deadline=None)
@given(peers=st.lists(st.integers(min_value=0, max_value=50), max_size=300))
def test_memory_stays_bounded_whatever_the_peers(peers: list[int]) -> None:
    clock = FakeClock()
    throttle = failures(clock, max_peers=8)
    for peer in peers:
        clock.now += 0.1
        throttle.record(f"10.0.0.{peer}", "/x", "no token")
        assert len(throttle._peers) <= 8
        assert len(throttle._lines._last) <= 8


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=400))
def test_a_single_guesser_gets_at_most_ten_guesses_per_minute(gaps: list[float]) -> None:
    clock = FakeClock()
    throttle = failures(clock)
    guesses: list[float] = []
    for gap in gaps:
        clock.now += gap
        if throttle.locked_out("a") is None:
            throttle.failed("a")
            guesses.append(clock.now)
    for i, start in enumerate(guesses):
        assert len([t for t in guesses[i:] if t - start < 60]) <= 10
