"""A bare STOMP client over the `websockets` library, with its own tiny frame parser.

Deliberately independent of randomchat.stomp: the tests that use it write frames as byte
literals, so a bug in our encoder cannot hide a bug in our parser (or the reverse).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class RawFrame:
    command: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def json(self) -> dict:
        return json.loads(self.body)


def parse_frames(buffer: bytearray) -> tuple[list[RawFrame], int]:
    """Take every complete frame out of `buffer`; return them and the heart-beats skipped."""
    frames: list[RawFrame] = []
    heartbeats = 0
    while buffer:
        if buffer[:1] == b"\n":
            del buffer[:1]
            heartbeats += 1
            continue
        if buffer[:2] == b"\r\n":
            del buffer[:2]
            heartbeats += 1
            continue
        head_end = buffer.find(b"\n\n")
        if head_end < 0:
            break
        lines = bytes(buffer[:head_end]).decode().split("\n")
        headers = tuple((key, value) for key, _, value in (line.partition(":") for line in lines[1:]))
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
        frames.append(RawFrame(lines[0], headers, bytes(buffer[body_start:end])))
        del buffer[: end + 1]
    return frames, heartbeats


def frame(command: str, headers: dict[str, str] | None = None, body: bytes | str = b"") -> bytes:
    """A client frame, byte by byte (no escaping: callers pass plain values)."""
    data = body.encode() if isinstance(body, str) else body
    head = "".join(f"{key}:{value}\n" for key, value in (headers or {}).items())
    return f"{command}\n{head}\n".encode() + data + b"\x00"


class RawClient:
    """One WebSocket connection; received frames are parsed as they arrive."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer = bytearray()
        self.pending: list[RawFrame] = []
        self.heartbeats = 0
        self.message_types: list[type] = []  # str for text messages, bytes for binary

    @classmethod
    async def open(cls, url: str, subprotocols=("v12.stomp", "v11.stomp", "v10.stomp"), **kwargs) -> RawClient:
        ws = await connect(url, subprotocols=list(subprotocols) if subprotocols else None, **kwargs)
        return cls(ws)

    async def send(self, data: bytes | str) -> None:
        """bytes go as a binary message, str as a text message."""
        await self.ws.send(data)

    async def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> RawFrame:
        """The next frame (heart-beats are counted, not returned)."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                message = await self.ws.recv()
                self.message_types.append(type(message))
                self.buffer += message.encode() if isinstance(message, str) else message
                frames, heartbeats = parse_frames(self.buffer)
                self.heartbeats += heartbeats
                self.pending.extend(frames)
        return self.pending.pop(0)

    async def expect(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> RawFrame:
        received = await self.recv_frame(timeout)
        assert received.command == command, f"expected {command}, got {received}"
        return received

    async def recv_event(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        message = await self.expect("MESSAGE", timeout)
        assert message.get("destination") == "/user/dialog"
        assert message.get("content-type") == "application/json"
        assert int(message.get("content-length")) == len(message.body)
        return message.json()

    async def frames_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[list[RawFrame], ConnectionClosed]:
        """Every frame until the server closes the connection, and how it closed."""
        frames: list[RawFrame] = []
        try:
            while True:
                frames.append(await self.recv_frame(timeout))
        except ConnectionClosed as closed:
            return frames + self.pending, closed

    async def assert_quiet(self, within: float = 0.3) -> None:
        """No frame arrives for `within` seconds (heart-beats aside)."""
        try:
            received = await self.recv_frame(within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {received}")

    # The usual steps, for tests whose subject is elsewhere.

    async def stomp_connect(self, heartbeat: str = "0,0") -> RawFrame:
        await self.send(frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "heart-beat": heartbeat}))
        return await self.expect("CONNECTED")

    async def subscribe(self, sub_id: str = "sub-0") -> None:
        await self.send(frame("SUBSCRIBE", {"id": sub_id, "destination": "/user/dialog", "receipt": "sub"}))
        await self.expect("RECEIPT")

    async def send_json(self, destination: str, payload, **headers: str) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"destination": destination, "content-type": "application/json", **headers}
        await self.send(frame("SEND", headers, body))

    async def close(self) -> None:
        await self.ws.close()
