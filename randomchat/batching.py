"""Group commit: the writes of many connections share one transaction.

Every database call of a process runs on one thread (channels' `database_sync_to_async`),
so a transaction per chat message would make that thread, and each commit's round trips,
the limit of the whole process. A `Batch` collects what connections submit while the
previous batch is being written and writes it next, in one call: no timer, so an idle
server answers at once and a busy one commits fewer, larger transactions.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from channels.db import database_sync_to_async

from chat.loops import settle, spawn
from chat.refusals import DATABASE_UNAVAILABLE


@dataclass
class _Queue:
    items: list = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    writing: bool = False


class Batch:
    """`write(items)` runs on the database thread and returns one result per item; a result
    that is an exception is raised in the submitter that gave that item. `alone(item)`, if
    given, is awaited instead for a batch of one: on the event loop, for a writer that can
    wait for the database there (randomchat.loop_database). An idle batch's item is written
    so by its own submitter, with no hand-over to a task and back (two turns of the event
    loop, which an idle pair's /start waited for); a submitter cancelled meanwhile (its
    connection's consumer, at shutdown) cancels its own write, whose transaction then rolls
    back, and what was submitted meanwhile is still written."""

    def __init__(self, write: Callable[[list], list], *, alone: Callable[[object], Awaitable] | None = None,
                 max_items: int = 500) -> None:
        self.write = write
        self.alone = alone
        self.max_items = max_items
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        if self.alone is not None and not queue.writing:
            return await self._write_alone(queue, item)
        future = loop.create_future()
        queue.items.append(item)
        queue.futures.append(future)
        if not queue.writing:
            queue.writing = True
            spawn(self._write_all(queue))
        return await future

    async def _write_alone(self, queue: _Queue, item):
        """Write an idle batch's one item; what is submitted meanwhile is written next, together."""
        queue.writing = True
        try:
            result = await self.alone(item)
        finally:
            if queue.items:
                spawn(self._write_all(queue))
            else:
                queue.writing = False
        if isinstance(result, BaseException):
            raise result
        return result

    async def _write_all(self, queue: _Queue) -> None:
        try:
            while queue.items:
                items, futures = queue.items[: self.max_items], queue.futures[: self.max_items]
                del queue.items[: self.max_items], queue.futures[: self.max_items]
                try:
                    if self.alone is not None and len(items) == 1:
                        results = [await self.alone(items[0])]
                    else:
                        results = await database_sync_to_async(self._write_isolated)(items)
                except Exception as exc:  # the database is down: every item of the batch fails
                    results = [exc] * len(items)
                settle(futures, results)
        finally:
            queue.writing = False

    def _write_isolated(self, items: list) -> list:
        """One item that breaks the batch's transaction must not fail the others with it:
        the batch is then written again item by item."""
        try:
            return self.write(items)
        except Exception as exc:
            if len(items) == 1 or isinstance(exc, DATABASE_UNAVAILABLE):
                raise
            results = []
            for item in items:
                try:
                    results += self.write([item])
                except Exception as item_exc:
                    results.append(item_exc)
            return results

