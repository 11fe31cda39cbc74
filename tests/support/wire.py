"""The wire client: STOMP over a real WebSocket (the `websockets` library) to a live daphne.

Frames are written and parsed here, byte by byte, never with randomchat.stomp: a bug in
our encoder cannot hide a bug in our parser, and what a test sees is what a third-party
client gets. A reader task records every frame as it arrives, so a test can read them in
order (`recv_frame`, `event`) or wait for one anywhere (`wait_frame`, `wait_code`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field

import websockets
from websockets.exceptions import ConnectionClosed

from .events import EVENT_KEYS, PAIRED, Event

ALL_SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
DEFAULT_TIMEOUT = 10.0
_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\c": ":", "\\\\": "\\"}


@dataclass(frozen=True)
class RawFrame:
    command: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float = field(default_factory=time.monotonic, compare=False)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header, as STOMP says a repeated header reads."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def json(self):
        return json.loads(self.body)


def frame(command: str, headers: dict[str, str] | None = None, body: bytes | str = b"") -> bytes:
    """A client frame, byte by byte (no escaping, no content-length: callers write what they mean)."""
    data = body.encode() if isinstance(body, str) else body
    head = "".join(f"{key}:{value}\n" for key, value in (headers or {}).items())
    return f"{command}\n{head}\n".encode() + data + b"\x00"


def _unescape(command: str, value: str) -> str:
    if command == "CONNECTED":  # STOMP 1.2: CONNECT and CONNECTED headers are not escaped
        return value
    return re.sub(r"\\.", lambda match: _ESCAPES.get(match.group(), match.group()), value)


def parse_frames(buffer: bytearray) -> tuple[list[RawFrame], int]:
    """Take every complete frame out of `buffer`; return them and the heart-beats skipped."""
    frames: list[RawFrame] = []
    heartbeats = 0
    while buffer:
        if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":
            del buffer[: 1 if buffer[:1] == b"\n" else 2]
            heartbeats += 1
            continue
        head_end = buffer.find(b"\n\n")
        if head_end < 0:
            break
        command, *lines = bytes(buffer[:head_end]).decode().split("\n")
        headers = tuple(
            (key, _unescape(command, value)) for key, _, value in (line.partition(":") for line in lines)
        )
        length = next((int(v) for k, v in headers if k == "content-length"), None)
        body_start = head_end + 2
        if length is None:
            end = buffer.find(b"\x00", body_start)
            if end < 0:
                break
        else:
            end = body_start + length
            if len(buffer) <= end:
                break
            assert buffer[end] == 0, f"no NUL after content-length {length}: {bytes(buffer[:end + 1])!r}"
        frames.append(RawFrame(command, headers, bytes(buffer[body_start:end])))
        del buffer[: end + 1]
    return frames, heartbeats


class WireClient:
    """One WebSocket connection; `await open()` connects, CONNECTs and SUBSCRIBEs."""

    def __init__(self, url: str, label: str = "") -> None:
        self.url = url
        self.label = label or url
        self.ws = None
        self.buffer = bytearray()
        self.frames: list[RawFrame] = []
        self.events: list[Event] = []
        self.errors: list[RawFrame] = []
        self.receipts: list[str] = []
        self.heartbeats = 0
        self.message_types: list[type] = []  # str for text messages, bytes for binary
        self.problems: list[str] = []  # what the server sent against PROTOCOL.md
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.closed_by: ConnectionClosed | None = None
        self.user: str | None = None  # senderUUID from the latest 10
        self.chat: str | None = None  # chatUUID from the latest 10
        self.connected: RawFrame | None = None  # the CONNECTED frame of open()
        self._read_up_to = 0  # frames handed out by recv_frame
        self._receipt_ids = 0
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    # Connection

    async def open_socket(self, *, subprotocols=ALL_SUBPROTOCOLS, timeout: float = 30.0, **options) -> WireClient:
        """The WebSocket only; no STOMP frame yet."""
        options = {"ping_interval": None, "close_timeout": 2, "max_size": None, "max_queue": None, **options}
        self.ws = await websockets.connect(
            self.url, subprotocols=list(subprotocols) if subprotocols else None, open_timeout=timeout, **options
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def open(self, *, timeout: float = 30.0, subscribe: bool = True, headers: dict | None = None) -> WireClient:
        await self.open_socket(timeout=timeout)
        self.connected = await self.stomp_connect(timeout=timeout, headers=headers)
        if subscribe:
            await self.subscribe(timeout=timeout)
        return self

    async def stomp_connect(
        self, heartbeat: str = "0,0", *, timeout: float = DEFAULT_TIMEOUT, headers: dict | None = None
    ) -> RawFrame:
        connect = {"accept-version": "1.2", "host": "localhost", "heart-beat": heartbeat, **(headers or {})}
        await self.send(frame("CONNECT", connect).decode())
        return await self.expect("CONNECTED", timeout)

    async def subscribe(self, sub_id: str = "sub-0", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.send(frame("SUBSCRIBE", {"id": sub_id, "destination": "/user/dialog", "receipt": "sub"}).decode())
        await self.expect("RECEIPT", timeout)

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
            while True:
                message = await self.ws.recv()
                self.message_types.append(type(message))
                self.buffer += message.encode() if isinstance(message, str) else message
                frames, heartbeats = parse_frames(self.buffer)
                if len(frames) + heartbeats != 1 or self.buffer:
                    self.problems.append(f"not one frame or heart-beat in one WebSocket message: {message!r}")
                async with self._changed:
                    self.heartbeats += heartbeats
                    for item in frames:
                        self._record(item)
                    self._changed.notify_all()
        except ConnectionClosed as closed:
            self.closed_by = closed
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    def _record(self, received: RawFrame) -> None:
        self.frames.append(received)
        if received.command == "MESSAGE":
            body = received.json()
            event = Event(dict(received.headers), body, received.at)
            if set(body) != EVENT_KEYS:
                self.problems.append(f"event keys {sorted(body)}")
            if (received.get("destination"), received.get("content-type")) != ("/user/dialog", "application/json"):
                self.problems.append(f"MESSAGE headers {received.headers}")
            if received.get("content-length") != str(len(received.body)):
                self.problems.append(f"content-length of {received}")
            self.events.append(event)
            if event.code == PAIRED:
                self.user, self.chat = event.sender, event.chat
        elif received.command == "ERROR":
            self.errors.append(received)
        elif received.command == "RECEIPT":
            self.receipts.append(received.get("receipt-id"))

    # Sending

    async def send(self, data: bytes | str) -> None:
        """bytes go as a binary WebSocket message, str as a text message."""
        await self.ws.send(data)

    async def send_json(self, destination: str, payload, *, receipt: bool = False) -> str | None:
        """SEND a JSON body (a str goes as it is, to send broken JSON); returns the receipt id."""
        body = (payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)).encode()
        headers = {"destination": destination, "content-type": "application/json", "content-length": str(len(body))}
        receipt_id = None
        if receipt:
            self._receipt_ids += 1
            receipt_id = headers["receipt"] = f"r{self._receipt_ids}"
        await self.send(frame("SEND", headers, body).decode())
        return receipt_id

    async def start(self, body: dict, *, receipt: bool = False) -> str | None:
        return await self.send_json("/start", body, receipt=receipt)

    async def message(self, content: str, *, chat: str | None = None, sender: str | None = None) -> None:
        await self.send_json(
            "/message", {"chatUUID": chat or self.chat, "senderUUID": sender or self.user, "content": content}
        )

    async def stop(self, *, chat: str | None = None, sender: str | None = None) -> None:
        await self.send_json("/stop", {"chatUUID": chat or self.chat, "senderUUID": sender or self.user, "content": None})

    async def resume(self, token, *, receipt: bool = False) -> str | None:
        """/resume with `token` (a str; anything else goes as it is, to send a bad body)."""
        return await self.send_json("/resume", {"resumeToken": token}, receipt=receipt)

    # Reading in order

    async def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> RawFrame:
        """The next frame not handed out yet; the ConnectionClosed if the server closed first."""
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.frames) > self._read_up_to or self.closed.is_set()), timeout
                )
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError(f"{self.label}: no frame within {timeout:g} s") from None
        self._check()
        if len(self.frames) <= self._read_up_to:
            raise self.closed_by or ConnectionError(f"{self.label}: closed (code {self.close_code})")
        self._read_up_to += 1
        return self.frames[self._read_up_to - 1]

    async def expect(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> RawFrame:
        received = await self.recv_frame(timeout)
        assert received.command == command, f"{self.label}: expected {command}, got {received}"
        return received

    async def event(self, code: int | None = None, *, error: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Event:
        """The next frame, a MESSAGE; its code and refusal slug asserted when given."""
        message = await self.expect("MESSAGE", timeout)
        event = Event(dict(message.headers), message.json(), message.at)
        if code is not None:
            assert event.code == code, f"{self.label}: expected event {code}, got {event}"
        if error is not None:
            assert event.error == error, f"{self.label}: expected refusal {error!r}, got {event}"
        return event

    async def frames_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[list[RawFrame], ConnectionClosed]:
        """Every frame not read yet until the server closes the connection, and how it closed."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(self.closed.is_set), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError(f"{self.label}: not closed within {timeout:g} s") from None
        self._check()
        rest, self._read_up_to = self.frames[self._read_up_to :], len(self.frames)
        return rest, self.closed_by

    async def assert_quiet(self, within: float = 0.3) -> None:
        """No frame arrives for `within` seconds (heart-beats aside)."""
        try:
            received = await self.recv_frame(within)
        except TimeoutError:
            return
        raise AssertionError(f"{self.label}: unexpected frame {received}")

    # Waiting for a frame anywhere (from index `start`), without reading it

    async def wait_frame(self, predicate, *, timeout: float, what: str, start: int = 0) -> RawFrame:
        return await self._wait(self.frames, predicate, timeout=timeout, what=what, start=start)

    async def wait_event(self, predicate=None, *, timeout: float, what: str = "event", start: int = 0) -> Event:
        return await self._wait(self.events, predicate or (lambda e: True), timeout=timeout, what=what, start=start)

    async def wait_code(self, code: int, *, timeout: float, start: int = 0, **match) -> Event:
        def predicate(event: Event) -> bool:
            return event.code == code and all(getattr(event, key) == value for key, value in match.items())

        return await self.wait_event(predicate, timeout=timeout, what=f"event {code} {match or ''}", start=start)

    async def wait_receipt(self, receipt: str, *, timeout: float = DEFAULT_TIMEOUT) -> RawFrame:
        return await self.wait_frame(
            lambda f: f.command == "RECEIPT" and f.get("receipt-id") == receipt, timeout=timeout, what=f"RECEIPT {receipt}"
        )

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
        self._check()
        if found:
            return found[0]
        raise AssertionError(
            f"{self.label}: connection closed (code {self.close_code}) before {what}; got {self.describe(start)}"
        )

    def _check(self) -> None:
        assert not self.problems, f"{self.label}: {self.problems}"

    def codes(self, start: int = 0) -> list[int]:
        return [event.code for event in self.events[start:]]

    def describe(self, start: int = 0) -> str:
        errors = [error.get("message") for error in self.errors]
        return f"events={self.events[start:]!r} errors={errors!r} closed={self.closed.is_set()}"


async def open_all(clients: list[WireClient], *, timeout: float = 60.0, concurrency: int | None = None) -> None:
    """Open every client at once (or `concurrency` at a time)."""
    gate = asyncio.Semaphore(concurrency or len(clients) or 1)

    async def one(client: WireClient) -> None:
        async with gate:
            await client.open(timeout=timeout)

    await asyncio.gather(*(one(client) for client in clients))


async def close_all(clients: list[WireClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def start_stored(client: WireClient, body: dict, *, timeout: float = 15.0) -> None:
    """/start with a receipt, and wait for it: the user is in the pool (or paired)."""
    await client.wait_receipt(await client.start(body, receipt=True), timeout=timeout)


async def pair(a: WireClient, b: WireClient, body_a: dict, body_b: dict, *, timeout: float = 15.0) -> tuple[Event, Event]:
    """a starts and is stored, then b starts; both get their 10 for the same dialog."""
    mark_a, mark_b = len(a.events), len(b.events)
    await start_stored(a, body_a, timeout=timeout)
    await b.start(body_b)
    paired_a = await a.wait_code(PAIRED, timeout=timeout, start=mark_a)
    paired_b = await b.wait_code(PAIRED, timeout=timeout, start=mark_b)
    assert paired_a.chat == paired_b.chat, (paired_a, paired_b)
    return paired_a, paired_b
