"""A raw STOMP-over-WebSocket client (asyncio + `websockets`) for the scale-out tests.

Frames go out as text messages written by `encode_frame`; everything that comes back is
parsed with the project's own FrameParser and recorded, so a test can wait for an event
and later check that nothing else arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import websockets

from randomchat.stomp import HEARTBEAT, Frame, FrameParser, encode_frame

EVENT_KEYS = {"chatUUID", "senderUUID", "eventCode", "serviceContent", "content"}

PAIRED, START_REFUSED, MESSAGE, MESSAGE_REFUSED, LEFT, STOP_REFUSED = 10, 11, 20, 21, 30, 31


@dataclass
class Event:
    """One MESSAGE frame on /user/dialog, with its JSON body and when it arrived."""

    headers: dict
    body: dict
    at: float = field(default_factory=time.monotonic)

    @property
    def code(self) -> int:
        return self.body["eventCode"]

    @property
    def chat(self) -> str | None:
        return self.body["chatUUID"]

    @property
    def sender(self) -> str | None:
        return self.body["senderUUID"]

    @property
    def service(self):
        return self.body["serviceContent"]

    @property
    def content(self):
        return self.body["content"]

    @property
    def error(self) -> str | None:
        service = self.service
        return service.get("error") if isinstance(service, dict) else None

    def __repr__(self) -> str:
        return f"Event({json.dumps(self.body, ensure_ascii=False)[:300]})"


def start_body(name: str, language: str = "en", *, gender=None, age=None, target_gender=None, target_age=None) -> dict:
    return {
        "name": name,
        "languageCode": language,
        "userAttributes": {"gender": gender, "age": age},
        "targetAttributes": {"gender": target_gender, "age": target_age},
    }


class StompWs:
    """One client connection. `await open()` connects, CONNECTs and SUBSCRIBEs."""

    def __init__(self, url: str, label: str = "") -> None:
        self.url = url
        self.label = label or url
        self.ws = None
        self.parser = FrameParser(version="1.2", max_frame_size=1 << 22)
        self.frames: list[Frame] = []
        self.events: list[Event] = []
        self.errors: list[Frame] = []
        self.receipts: list[str] = []
        self.closed: asyncio.Event = asyncio.Event()
        self.close_code: int | None = None
        self.user: str | None = None  # senderUUID from the latest 10
        self.chat: str | None = None  # chatUUID from the latest 10
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None
        self._receipt_ids = 0

    # Connection

    async def open(self, *, timeout: float = 30.0, subscribe: bool = True) -> StompWs:
        self.ws = await websockets.connect(
            self.url,
            subprotocols=["v12.stomp"],
            open_timeout=timeout,
            ping_interval=None,
            close_timeout=2,
            max_size=None,
            max_queue=None,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.send_frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0", "host": "randomchat"})
        await self.wait_frame(lambda frame: frame.command == "CONNECTED", timeout=timeout, what="CONNECTED")
        if subscribe:
            await self.send_frame("SUBSCRIBE", {"id": "0", "destination": "/user/dialog"})
        return self

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        if self.ws is not None and self.ws.transport is not None:
            self.ws.transport.abort()

    @property
    def is_open(self) -> bool:
        return self.ws is not None and not self.closed.is_set()

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                data = message.encode() if isinstance(message, str) else message
                items = self.parser.feed(data)
                async with self._changed:
                    for item in items:
                        if item is HEARTBEAT:
                            continue
                        self._record(item)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    def _record(self, frame: Frame) -> None:
        self.frames.append(frame)
        if frame.command == "MESSAGE":
            body = json.loads(frame.body)
            assert set(body) == EVENT_KEYS, f"{self.label}: event keys {sorted(body)}"
            event = Event(dict(frame.headers), body)
            self.events.append(event)
            if event.code == PAIRED:
                self.user, self.chat = event.sender, event.chat
        elif frame.command == "ERROR":
            self.errors.append(frame)
        elif frame.command == "RECEIPT":
            self.receipts.append(frame.get("receipt-id"))

    # Sending

    async def send_frame(self, command: str, headers: dict, body: bytes | str = b"") -> None:
        if isinstance(body, str):
            body = body.encode()
        data = encode_frame(Frame(command, tuple(headers.items()), body), "1.2")
        await self.ws.send(data.decode())

    async def send(self, destination: str, payload: dict, *, receipt: bool = False) -> str | None:
        headers = {"destination": destination, "content-type": "application/json"}
        receipt_id = None
        if receipt:
            self._receipt_ids += 1
            receipt_id = f"r{self._receipt_ids}"
            headers["receipt"] = receipt_id
        await self.send_frame("SEND", headers, json.dumps(payload))
        return receipt_id

    async def start(self, body: dict, *, receipt: bool = False) -> str | None:
        return await self.send("/start", body, receipt=receipt)

    async def message(self, content: str, *, chat: str | None = None, sender: str | None = None) -> None:
        await self.send(
            "/message",
            {"chatUUID": chat or self.chat, "senderUUID": sender or self.user, "content": content},
        )

    async def stop(self, *, chat: str | None = None, sender: str | None = None) -> None:
        await self.send("/stop", {"chatUUID": chat or self.chat, "senderUUID": sender or self.user, "content": None})

    # Waiting

    async def wait_frame(self, predicate, *, timeout: float, what: str, start: int = 0) -> Frame:
        return await self._wait(self.frames, predicate, timeout=timeout, what=what, start=start)

    async def wait_event(self, predicate=None, *, timeout: float, what: str = "event", start: int = 0) -> Event:
        return await self._wait(self.events, predicate or (lambda e: True), timeout=timeout, what=what, start=start)

    async def wait_code(self, code: int, *, timeout: float, start: int = 0, **match) -> Event:
        def predicate(event: Event) -> bool:
            return event.code == code and all(getattr(event, key) == value for key, value in match.items())

        return await self.wait_event(predicate, timeout=timeout, what=f"event {code} {match or ''}", start=start)

    async def _wait(self, items: list, predicate, *, timeout: float, what: str, start: int):
        found = []

        def ready() -> bool:
            for item in items[start:]:
                if predicate(item):
                    found.append(item)
                    return True
            return self.closed.is_set()

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise AssertionError(f"{self.label}: no {what} within {timeout:g} s; got {self.describe(start)}") from None
        if found:
            return found[0]
        raise AssertionError(
            f"{self.label}: connection closed (code {self.close_code}) before {what}; got {self.describe(start)}"
        )

    def codes(self, start: int = 0) -> list[int]:
        return [event.code for event in self.events[start:]]

    def describe(self, start: int = 0) -> str:
        errors = [frame.get("message") for frame in self.errors]
        return f"events={self.events[start:]!r} errors={errors!r} closed={self.closed.is_set()}"


async def open_all(clients: list[StompWs], *, timeout: float = 60.0, concurrency: int | None = None) -> None:
    """Open every client at once (or `concurrency` at a time)."""
    if concurrency is None:
        await asyncio.gather(*(client.open(timeout=timeout) for client in clients))
        return
    gate = asyncio.Semaphore(concurrency)

    async def one(client: StompWs) -> None:
        async with gate:
            await client.open(timeout=timeout)

    await asyncio.gather(*(one(client) for client in clients))


async def close_all(clients: list[StompWs]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def start_stored(client: StompWs, body: dict, *, timeout: float = 15.0) -> None:
    """/start with a receipt, and wait for it: the user is in the pool (or paired)."""
    receipt = await client.start(body, receipt=True)
    await client.wait_frame(
        lambda frame: frame.command == "RECEIPT" and frame.get("receipt-id") == receipt,
        timeout=timeout,
        what=f"RECEIPT {receipt}",
    )


async def pair(a: StompWs, b: StompWs, body_a: dict, body_b: dict, *, timeout: float = 15.0) -> tuple[Event, Event]:
    """a starts and is stored, then b starts; both get their 10 for the same dialog."""
    mark_a, mark_b = len(a.events), len(b.events)
    await start_stored(a, body_a, timeout=timeout)
    await b.start(body_b)
    paired_a = await a.wait_code(PAIRED, timeout=timeout, start=mark_a)
    paired_b = await b.wait_code(PAIRED, timeout=timeout, start=mark_b)
    assert paired_a.chat == paired_b.chat, (paired_a, paired_b)
    return paired_a, paired_b
