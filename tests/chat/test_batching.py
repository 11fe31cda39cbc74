"""randomchat.batching.Batch: group commit of what many connections submit; and how its
results go out (notify.send_notices)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import OperationalError

from randomchat.batching import Batch


class Recorder:
    """A write function that records each call and can hold the first one until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[list] = []
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.entered = threading.Event()

    def __call__(self, items: list) -> list:
        self.calls.append(list(items))
        self.entered.set()
        self.release.wait(10)
        return [self.result(item) for item in items]

    @staticmethod
    def result(item):
        if item == "poison":
            raise ValueError("breaks the whole transaction")
        if item == "refused":
            return LookupError("refused")
        return item.upper()


async def test_an_idle_batch_writes_at_once_alone():
    batch = Batch(Recorder())
    assert await batch.submit("a") == "A"
    assert batch.write.calls == [["a"]]


async def test_an_idle_batch_with_a_lone_writer_writes_in_its_submitters_own_task():
    tasks = []

    async def alone(item):
        tasks.append(asyncio.current_task())
        return Recorder.result(item)

    batch = Batch(Recorder(), alone=alone)
    assert await batch.submit("a") == "A"
    assert tasks == [asyncio.current_task()] and batch.write.calls == []
    with pytest.raises(LookupError):  # a result that is an exception, as from a batch
        await batch.submit("refused")


async def test_what_arrives_during_a_lone_write_is_written_together_next():
    write, entered, release = Recorder(), asyncio.Event(), asyncio.Event()

    async def alone(item):
        entered.set()
        await release.wait()
        if item == "poison":
            raise ValueError("refused")
        return item.upper()

    batch = Batch(write, alone=alone)
    first = asyncio.ensure_future(batch.submit("poison"))
    await entered.wait()
    rest = [asyncio.ensure_future(batch.submit(f"m{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(ValueError):
        await first
    assert await asyncio.gather(*rest) == ["M0", "M1", "M2"]
    assert write.calls == [["m0", "m1", "m2"]]
    entered.clear()
    assert await batch.submit("b") == "B" and entered.is_set()  # idle again: alone


async def test_a_cancelled_lone_submitter_cancels_its_own_write_only():
    entered, cancelled, written = asyncio.Event(), [], []

    async def alone(item):
        if item == "first":
            entered.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(item)
                raise
        written.append(item)
        return item.upper()

    batch = Batch(Recorder(), alone=alone)
    first = asyncio.ensure_future(batch.submit("first"))
    await entered.wait()
    queued = asyncio.ensure_future(batch.submit("queued"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await asyncio.wait_for(queued, 5) == "QUEUED"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert cancelled == ["first"] and written == ["queued"]
    assert await batch.submit("again") == "AGAIN"  # idle again


async def test_what_arrives_during_a_write_is_written_together_next():
    write = Recorder(hold_first=True)
    batch = Batch(write)
    first = asyncio.ensure_future(batch.submit("first"))
    await asyncio.to_thread(write.entered.wait, 5)
    rest = [asyncio.ensure_future(batch.submit(f"m{i}")) for i in range(20)]
    await asyncio.sleep(0.05)
    write.release.set()
    assert await first == "FIRST"
    assert await asyncio.gather(*rest) == [f"M{i}" for i in range(20)]
    assert write.calls == [["first"], [f"m{i}" for i in range(20)]]


async def test_batches_are_bounded():
    write = Recorder(hold_first=True)
    batch = Batch(write, max_items=8)
    first = asyncio.ensure_future(batch.submit("first"))
    await asyncio.to_thread(write.entered.wait, 5)
    rest = [asyncio.ensure_future(batch.submit(f"m{i}")) for i in range(20)]
    await asyncio.sleep(0.05)
    write.release.set()
    await asyncio.gather(first, *rest)
    assert [len(call) for call in write.calls] == [1, 8, 8, 4]


async def test_an_exception_result_is_raised_in_its_own_submitter_only():
    batch = Batch(Recorder())
    results = await asyncio.gather(batch.submit("a"), batch.submit("refused"), batch.submit("b"), return_exceptions=True)
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], LookupError)


async def test_an_item_that_breaks_the_batch_fails_alone():
    write = Recorder(hold_first=True)
    batch = Batch(write)
    first = asyncio.ensure_future(batch.submit("first"))
    await asyncio.to_thread(write.entered.wait, 5)
    rest = [asyncio.ensure_future(batch.submit(item)) for item in ("a", "poison", "b")]
    await asyncio.sleep(0.05)
    write.release.set()
    await first
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], ValueError)
    assert write.calls[1:] == [["a", "poison", "b"], ["a"], ["poison"], ["b"]]


async def test_a_database_outage_fails_the_whole_batch_without_retrying_item_by_item():
    calls = []

    def down(items):
        calls.append(list(items))
        raise OperationalError("connection refused")

    batch = Batch(down)
    results = await asyncio.gather(*(batch.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, OperationalError) for r in results)
    assert len(calls) <= 3 and all(len(c) >= 1 for c in calls) and sum(len(c) for c in calls) == 3


async def test_the_batch_writes_again_after_a_failure():
    fail = [True]

    def flaky(items):
        if fail.pop() if fail else False:
            raise OperationalError("down")
        return items

    batch = Batch(flaky)
    with pytest.raises(OperationalError):
        await batch.submit(1)
    assert await batch.submit(2) == 2


async def test_a_full_channel_drops_its_notice_and_the_others_still_go(caplog):
    from channels.layers import InMemoryChannelLayer

    from chat.events import Notice
    from chat.notify import send_notices

    layer = InMemoryChannelLayer(capacity=1)
    stuck, fine = await layer.new_channel(), await layer.new_channel()
    await layer.send(stuck, {"type": "chat.event", "n": 0})
    await send_notices(layer, [Notice(stuck, {"type": "chat.event", "n": 1}), Notice(fine, {"type": "chat.event", "n": 2})])
    assert (await layer.receive(fine))["n"] == 2
    assert (await layer.receive(stuck))["n"] == 0
    assert "event=notice_dropped" in caplog.text
