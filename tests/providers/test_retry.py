"""The shared retry helper: backoff with jitter, transient errors only."""

from __future__ import annotations

import pytest

from keycore import errors
from keycore.providers.retry import RetryPolicy, backoff_delay, call_with_retry


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then answers "ok"; counts calls."""

    def __init__(self, error: errors.KeyCoreError, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.mark.parametrize(
    "error", [errors.KmsUnreachable("down"), errors.KmsTimeout("slow"), errors.KmsThrottled("busy")]
)
def test_it_retries_transient_errors_until_success(error):
    operation, sleeps = Flaky(error, failures=2), Sleeps()
    assert call_with_retry(operation, policy=RetryPolicy(attempts=3), sleep=sleeps, rng=lambda: 1.0) == "ok"
    assert operation.calls == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        errors.KmsAccessDenied("no"),
        errors.KmsKeyNotFound("gone"),
        errors.KmsKeyDisabled("off"),
        errors.KmsMisconfigured("wrong"),
        errors.AuthenticationFailed("tampered"),
        errors.ProviderError("odd"),
    ],
)
def test_it_does_not_retry_permanent_errors(error):
    operation, sleeps = Flaky(error, failures=5), Sleeps()
    with pytest.raises(type(error)) as raised:
        call_with_retry(operation, policy=RetryPolicy(attempts=5), sleep=sleeps)
    assert raised.value is error
    assert operation.calls == 1
    assert sleeps == []


def test_it_does_not_retry_errors_that_are_not_keycore_errors():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        call_with_retry(broken, sleep=Sleeps())
    assert len(calls) == 1


def test_it_gives_up_after_the_last_attempt_with_the_last_error():
    operation, sleeps = Flaky(errors.KmsUnreachable("still down"), failures=10), Sleeps()
    with pytest.raises(errors.KmsUnreachable, match="still down"):
        call_with_retry(operation, policy=RetryPolicy(attempts=4, budget=None), sleep=sleeps, rng=lambda: 0.5)
    assert operation.calls == 4
    assert len(sleeps) == 3


def test_the_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(base_delay=0.1, max_delay=0.5)
    ceilings = [backoff_delay(n, policy, rng=lambda: 1.0) for n in range(1, 6)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_the_jitter_spreads_delays_between_zero_and_the_ceiling():
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    assert backoff_delay(3, policy, rng=lambda: 0.0) == 0.0
    assert backoff_delay(3, policy, rng=lambda: 0.25) == pytest.approx(0.1)
    delays = {backoff_delay(2, policy) for _ in range(50)}
    assert len(delays) > 40
    assert all(0 <= d <= 0.2 for d in delays)


def test_it_starts_no_retry_that_would_exceed_the_budget():
    now = [0.0]

    def slow_failure():
        now[0] += 2.0  # each attempt takes two seconds
        raise errors.KmsTimeout("slow")

    sleeps = Sleeps()
    with pytest.raises(errors.KmsTimeout):
        call_with_retry(
            slow_failure,
            policy=RetryPolicy(attempts=10, base_delay=0.5, max_delay=0.5, budget=5.0),
            sleep=sleeps,
            clock=lambda: now[0],
            rng=lambda: 1.0,
        )
    # attempts end at 2 s and 4 s (each followed by a 0.5 s wait); a third retry would start past 5 s
    assert len(sleeps) == 2
