"""State kept per event loop: a server runs one loop, the tests run many in turn."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
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
