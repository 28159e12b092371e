"""Exponential back-off policy and per-stream retry state.

Part of the pure core: no :mod:`tango` import.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

__all__ = ["BackoffPolicy", "BackoffState"]


@dataclass(frozen=True)
class BackoffPolicy:
    """How quickly a failing connection is retried.

    The n-th retry (n from 1) waits ``initial_delay * factor ** (n - 1)``
    seconds, capped at ``max_delay``, then spread by up to ``jitter`` of
    itself either way so that many streams do not retry in step.

    The defaults retry after 50 ms, 100 ms, 200 ms, ... and at least once a
    second after the fifth attempt, so a device that becomes reachable is
    connected within about a second (Tango itself retries every 10 s).

    Attributes:
        initial_delay: Seconds before the first retry.
        factor: Growth of the delay from one retry to the next.
        max_delay: Longest delay between two retries.
        jitter: Relative random spread of each delay, from 0 to 1.
    """

    initial_delay: float = 0.05
    factor: float = 2.0
    max_delay: float = 1.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        """Check the values.

        Raises:
            ValueError: If a value is out of range.
        """
        if not self.initial_delay > 0:
            raise ValueError(f"initial_delay must be > 0, got {self.initial_delay!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if not self.max_delay >= self.initial_delay:
            raise ValueError(
                f"max_delay ({self.max_delay!r}) must be >= initial_delay ({self.initial_delay!r})"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """Return the delay before retry number ``attempt``.

        Args:
            attempt: The retry number, from 1.
            rand: A number in [0, 1) used for the jitter; random if None.

        Returns:
            Seconds to wait.
        """
        base = self.initial_delay * self.factor ** min(max(attempt - 1, 0), 64)
        base = min(base, self.max_delay)
        if self.jitter:
            r = random.random() if rand is None else rand  # noqa: S311 - not crypto
            base *= 1 + self.jitter * (2 * r - 1)
        return base


@dataclass
class BackoffState:
    """Retry bookkeeping of one failing stream.

    Attributes:
        attempts: Failed attempts since the last success.
        delay: The delay chosen after the last failure, in seconds.
        next_attempt_at: ``time.monotonic()`` of the next try, or None.
        last_error: Short text of the last failure.
        failing_since: ``time.time()`` of the first failure in this series.
    """

    attempts: int = 0
    delay: float = 0.0
    next_attempt_at: float | None = None
    last_error: str = ""
    failing_since: float | None = field(default=None)

    def failed(self, policy: BackoffPolicy, error: str, floor: float = 0.0) -> float:
        """Record a failure and choose the delay before the next attempt.

        Args:
            policy: The back-off policy.
            error: Short text describing the failure.
            floor: A lower bound for the delay (used for failures that retrying
                quickly cannot mend).

        Returns:
            The delay in seconds.
        """
        self.attempts += 1
        if self.failing_since is None:
            self.failing_since = time.time()
        self.delay = max(policy.delay(self.attempts), floor)
        self.next_attempt_at = time.monotonic() + self.delay
        self.last_error = error
        return self.delay

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.attempts = 0
        self.delay = 0.0
        self.next_attempt_at = None
        self.last_error = ""
        self.failing_since = None

    @property
    def active(self) -> bool:
        """True while there are failures not yet mended."""
        return self.attempts > 0
