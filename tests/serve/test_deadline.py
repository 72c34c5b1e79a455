"""One deadline per request over a stream's awaits."""

from __future__ import annotations

import asyncio

import pytest

from serve.deadline import Deadline


async def test_a_wait_past_the_deadline_times_out_and_the_task_goes_on():
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 0.05)
    assert await deadline.wait(asyncio.sleep(0, result="fast")) == "fast"
    with pytest.raises(asyncio.TimeoutError):
        await deadline.wait(asyncio.sleep(10))
    assert deadline.fired
    await asyncio.sleep(0)  # the task was not left cancelled
    with pytest.raises(asyncio.TimeoutError):  # and it stays expired
        await deadline.wait(asyncio.sleep(0))


async def test_a_deadline_passing_between_waits_is_noticed_by_the_next():
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 0.02)
    await deadline.wait(asyncio.sleep(0))
    await asyncio.sleep(0.05)  # the caller holds the stream past the deadline
    with pytest.raises(asyncio.TimeoutError):
        await deadline.wait(asyncio.sleep(0))
    deadline.close()


async def test_rescheduling_and_a_real_cancel():
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 0.02)
    await deadline.wait(asyncio.sleep(0))
    deadline.reschedule(loop.time() + 10)
    assert await deadline.wait(asyncio.sleep(0.05, result=1)) == 1  # past the first limit: fine

    async def waiter():
        await deadline.wait(asyncio.sleep(10))

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not ours: stays a cancellation
        await task
    deadline.close()
