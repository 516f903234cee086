"""A burst of trust syncs runs the job at most twice, and every caller sees a run that began
after its call (server_ext/stock/coalescing.py)."""

from __future__ import annotations

import asyncio

import pytest

from server_ext.stock.coalescing import Coalesced


async def settle() -> None:
    """Let every ready task run until it waits (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Job:
    def __init__(self) -> None:
        self.runs = 0
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()
        self.fail_next = False
        self.state = 0  # what the job "reads": a run covers every change made before it
        self.seen: list[int] = []

    async def __call__(self) -> None:
        self.runs += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        seen = self.state
        try:
            await self.release.wait()
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("the node did not answer")
            self.seen.append(seen)
        finally:
            self.running -= 1


async def test_a_burst_costs_at_most_two_runs_and_each_caller_is_covered() -> None:
    job = Job()
    sync = Coalesced(job)
    first = asyncio.create_task(sync.run())
    await settle()
    assert job.runs == 1
    # While the first run is busy, a hundred changes and a hundred callers.
    later = []
    for change in range(1, 101):
        job.state = change
        later.append(asyncio.create_task(sync.run()))
    await settle()
    job.release.set()
    await asyncio.gather(first, *later)
    assert job.runs == 2
    assert job.most_at_once == 1
    # The second run read the state after the last change: every caller is covered.
    assert job.seen == [0, 100]


async def test_a_call_after_a_run_finished_runs_again() -> None:
    job = Job()
    job.release.set()
    sync = Coalesced(job)
    await sync.run()
    await sync.run()
    assert job.runs == 2


async def test_a_failed_run_raises_to_its_callers_and_the_next_call_retries() -> None:
    job = Job()
    job.fail_next = True
    sync = Coalesced(job)
    callers = [asyncio.create_task(sync.run()) for _ in range(3)]
    await settle()
    job.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results), results
    await sync.run()
    assert job.runs == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_run_of_the_others() -> None:
    job = Job()
    sync = Coalesced(job)
    impatient = asyncio.create_task(sync.run())
    patient = asyncio.create_task(sync.run())
    await settle()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    job.release.set()
    await patient
    assert job.seen == [0]


async def test_drain_waits_for_the_queued_run() -> None:
    job = Job()
    sync = Coalesced(job)
    first = asyncio.create_task(sync.run())
    await settle()
    second = asyncio.create_task(sync.run())
    await settle()
    job.release.set()
    await sync.drain()
    assert job.runs == 2
    await asyncio.gather(first, second)
