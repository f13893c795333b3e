"""Wait for a condition by polling, never by sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class _Deadline:
    """One wait's clock, and the last assertion its predicate raised (told when the wait gives up)."""

    def __init__(self, timeout: float, message: str) -> None:
        self.timeout, self.message = timeout, message
        self.at = time.monotonic() + timeout
        self.last: BaseException | None = None

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """One call of the predicate: an AssertionError it raises is remembered, not raised."""
        try:
            yield
        except AssertionError as exc:
            self.last = exc

    def give_up_if_passed(self) -> None:
        if time.monotonic() > self.at:
            last = self.last
            raise AssertionError(f"{self.message} within {self.timeout}s" + (f": {last}" if last else ""))


def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    message: str = "condition not met",
) -> T:
    """Poll until predicate returns a truthy value (or stops raising AssertionError)."""
    deadline = _Deadline(timeout, message)
    while True:
        with deadline.attempt():
            if value := predicate():
                return value
        deadline.give_up_if_passed()
        time.sleep(interval)


async def aeventually(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    message: str = "condition not met",
) -> T:
    """eventually() for a coroutine predicate, sleeping without blocking the event loop."""
    deadline = _Deadline(timeout, message)
    while True:
        with deadline.attempt():
            if value := await predicate():
                return value
        deadline.give_up_if_passed()
        await asyncio.sleep(interval)
