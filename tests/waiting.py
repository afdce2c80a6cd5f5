"""Waiting on a condition in tests (never a bare sleep)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str = "the condition",
               timeout: float = 10.0, every: float = 0.01) -> T:
    """Poll ``predicate`` every ``every`` s until it returns something truthy, and return it.

    Raises:
        AssertionError: still falsy after ``timeout`` s (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
