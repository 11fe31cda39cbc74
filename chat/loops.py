"""State kept per event loop (a server runs one loop, the tests run many in turn), tasks
that run on their own, and futures settled for many waiters at once."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """`get()` gives the running loop's own instance, made by `factory` on first use and
    dropped with its loop."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = self.factory()
        return state


_running: set[asyncio.Task] = set()


def spawn(coro) -> asyncio.Task:
    """Run `coro` as a task that nobody awaits; the loop keeps only weak references to its
    tasks, so this keeps a strong one until it is done."""
    task = asyncio.get_running_loop().create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def settle(futures: Iterable[asyncio.Future], results: Iterable) -> None:
    """Each future gets its result, or raises it where it is awaited if it is an exception;
    one whose waiter was cancelled is left alone."""
    for future, result in zip(futures, results):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
