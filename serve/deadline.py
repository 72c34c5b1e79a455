"""A deadline over a request's awaits: one timer per request, not one task per token.

``asyncio.wait_for`` on every token of a stream creates (on Python 3.11) a task per token.
:class:`Deadline` instead keeps one ``call_at`` timer; when it fires while the owning task is
inside :meth:`Deadline.wait`, that task is cancelled and the wait raises
``asyncio.TimeoutError``. A deadline that passes while the stream is handed to the caller
(between waits) is noticed by the next wait. Waits only ever cover awaits, never a ``yield``,
so the cancellation cannot land in the caller's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    def __init__(self, when: float) -> None:
        """``when`` is in the running loop's clock (``loop.time()``)."""
        self._loop = asyncio.get_running_loop()
        self._when = when
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task | None = None
        self.fired = False

    @property
    def when(self) -> float:
        return self._when

    def reschedule(self, when: float) -> None:
        """Move the deadline (the first-token limit gives way to the request's)."""
        self._when = when
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._loop.call_at(when, self._fire)

    async def wait(self, aw: Awaitable[T]) -> T:
        """``await aw``, raising ``asyncio.TimeoutError`` once the deadline has passed."""
        if self.fired or self._loop.time() >= self._when:
            self.fired = True
            _close(aw)
            raise asyncio.TimeoutError
        if self._timer is None:
            self._timer = self._loop.call_at(self._when, self._fire)
        task = asyncio.current_task()
        self._waiter = task
        try:
            return await aw
        except asyncio.CancelledError:
            if not self.fired:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: this cancel was ours
            if uncancel is not None:
                uncancel()
            raise asyncio.TimeoutError from None
        finally:
            self._waiter = None

    def _fire(self) -> None:
        self._timer = None
        if self._waiter is not None:
            self.fired = True
            self._waiter.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _close(aw: Awaitable[object]) -> None:
    close = getattr(aw, "close", None)  # a coroutine never awaited: close it quietly
    if close is not None:
        close()
