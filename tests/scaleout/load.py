"""Clients chatting steadily across processes while a service goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import websockets

from tests.support.events import MESSAGE, MESSAGE_REFUSED, start_body
from tests.support.wire import WireClient, pair


@dataclass
class Sent:
    client: WireClient
    content: str
    at: float


@dataclass
class Chatter:
    """Pairs (one side per process) sending numbered messages every `interval` seconds."""

    pairs: list[tuple[WireClient, WireClient]]
    interval: float = 0.3
    sent: list[Sent] = field(default_factory=list)
    send_failures: list[tuple[str, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def clients(self) -> list[WireClient]:
        return [client for pair_ in self.pairs for client in pair_]

    @classmethod
    async def across(cls, servers, count: int, *, language: str = "en", interval: float = 0.3) -> Chatter:
        """`count` pairs, side a on servers[0], side b on servers[1], paired one by one."""
        pairs = []
        for i in range(count):
            a = WireClient(servers[0].ws_url, f"a{i}@p1")
            b = WireClient(servers[1].ws_url, f"b{i}@p2")
            pairs.append((a, b))
        chatter = cls(pairs=pairs, interval=interval)
        await asyncio.gather(*(c.open() for c in chatter.clients))
        for i, (a, b) in enumerate(pairs):
            await pair(a, b, start_body(f"a{i}", language), start_body(f"b{i}", language))
        return chatter

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index, client in enumerate(self.clients):
            self._tasks.append(loop.create_task(self._talk(client, index)))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _talk(self, client: WireClient, index: int) -> None:
        await asyncio.sleep(self.interval * index / max(1, len(self.clients)))  # spread them out
        seq = 0
        while not self._stop.is_set():
            content = f"{client.label}#{seq}"
            try:
                await client.message(content)
            except websockets.ConnectionClosed as exc:
                self.send_failures.append((client.label, f"closed: {exc}"))
                return
            self.sent.append(Sent(client, content, time.monotonic()))
            seq += 1
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    # Outcomes

    def sent_by(self, client: WireClient) -> list[Sent]:
        return [s for s in self.sent if s.client is client]

    def unanswered(self, client: WireClient) -> int:
        """Messages of this client that got neither its own 20 nor a 21 (yet)."""
        own = {e.content for e in client.events if e.code == MESSAGE and e.sender == client.user}
        refused = sum(1 for e in client.events if e.code == MESSAGE_REFUSED)
        accepted = sum(1 for s in self.sent_by(client) if s.content in own)
        return len(self.sent_by(client)) - accepted - refused

    async def settle(self, *, timeout: float, quiet: float = 2.0) -> None:
        """Wait until every open client's messages are answered and nothing arrived for `quiet` s."""
        deadline = time.monotonic() + timeout
        last = -1
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            total = sum(len(c.events) for c in self.clients)
            if total != last:
                last, last_change = total, time.monotonic()
            pending = [c for c in self.clients if c.is_open and self.unanswered(c) > 0]
            if not pending and time.monotonic() - last_change >= quiet:
                return
            await asyncio.sleep(0.2)

    def received_20s(self) -> dict[str, list[tuple[str, str]]]:
        """content -> [(receiver label, sender)] of every 20 of this chatter's messages."""
        seen: dict[str, list[tuple[str, str]]] = {}
        for client in self.clients:
            for event in client.events:
                if event.code == MESSAGE:
                    seen.setdefault(event.content, []).append((client.label, event.sender))
        return seen
