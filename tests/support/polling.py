"""Wait for a condition by polling, never by sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    message: str = "condition not met",
) -> T:
    """Poll until predicate returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s" + (f": {last}" if last else ""))
        time.sleep(interval)


async def aeventually(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    message: str = "condition not met",
) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s" + (f": {last}" if last else ""))
        await asyncio.sleep(interval)
