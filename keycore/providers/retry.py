"""Retrying a KMS call: exponential backoff with full jitter, transient errors only.

Providers call :func:`call_with_retry` around one KMS request. Only errors whose
class says ``retryable`` (``KmsUnreachable``, ``KmsTimeout``, ``KmsThrottled``)
are retried; access denied, key disabled, a tampered blob and everything else
are raised at once, because asking again cannot change the answer and, for a
wrong HSM PIN, can lock the token.

The delay before retry *n* (1-based) is uniform in ``[0, min(max_delay,
base_delay * 2**(n-1))]`` ("full jitter"), so many workers that lost the same
KMS at the same moment do not come back in lockstep. ``budget`` bounds the
whole call: no new attempt starts once it would be exceeded, so the caller's
worst case is about ``attempts * provider timeout + budget``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from keycore import errors

log = logging.getLogger("keycore.providers")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one KMS request."""

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0
    #: seconds; no retry is started once waiting for it would pass this
    budget: float | None = 5.0


DEFAULT_POLICY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def backoff_delay(retry_number: int, policy: RetryPolicy, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (retry_number - 1))
    return rng() * ceiling


def call_with_retry(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    description: str = "KMS request",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``operation``; on a retryable ``KeyCoreError`` wait and try again, up to the policy.

    The last error is re-raised unchanged, so callers see the precise reason.
    """
    started = clock()
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except errors.KeyCoreError as exc:
            if not exc.retryable or attempt >= policy.attempts:
                raise
            delay = backoff_delay(attempt, policy, rng)
            if policy.budget is not None and clock() - started + delay > policy.budget:
                raise
            log.info("%s failed (%s), retry %d in %.3fs: %s", description, exc.code, attempt, delay, exc.detail)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
