"""A small raw STOMP 1.2 client over the `websockets` library, for capturing real events.

Frames are written and read here by hand (not with the project's codec), so that the
captured payloads are exactly what a third-party client would get on the wire.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import websockets

TIMEOUT = 10.0


def frame(command: str, headers: dict[str, str], body: str = "") -> str:
    data = body.encode("utf-8")
    lines = [command, *(f"{key}:{value}" for key, value in headers.items())]
    if data:
        lines.append(f"content-length:{len(data)}")
    return "\n".join(lines) + "\n\n" + body + "\x00"


def parse(message: str) -> tuple[str, dict[str, str], str]:
    """One frame (the server sends exactly one per WebSocket message), STOMP 1.2 unescaped."""
    head, _, rest = message.partition("\n\n")
    command, *header_lines = head.split("\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        value = value.replace("\\n", "\n").replace("\\c", ":").replace("\\r", "\r").replace("\\\\", "\\")
        headers.setdefault(key, value)
    raw = rest.encode("utf-8")
    length = int(headers.get("content-length", len(raw) - 1))
    assert raw[length:] == b"\x00", f"the frame must end right after content-length bytes: {message!r}"
    return command, headers, raw[:length].decode("utf-8")


@dataclass
class Event:
    headers: dict[str, str]
    body: dict


@dataclass
class StompWs:
    """One connection; `events` keeps every MESSAGE it received, in order."""

    url: str
    ws: object = None
    events: list[Event] = field(default_factory=list)
    _seen: int = 0

    async def open(self, *, subscribe: bool = True) -> StompWs:
        self.ws = await websockets.connect(self.url, subprotocols=["v12.stomp"], open_timeout=TIMEOUT)
        await self.ws.send(frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "heart-beat": "0,0"}))
        command, headers, _ = await self._next_frame()
        assert command == "CONNECTED", (command, headers)
        if subscribe:
            await self.ws.send(frame("SUBSCRIBE", {"id": "sub-0", "destination": "/user/dialog"}))
        return self

    async def send(self, destination: str, body: object) -> None:
        """SEND a JSON body (a str is sent as it is, to send broken JSON)."""
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        await self.ws.send(frame("SEND", {"destination": destination, "content-type": "application/json"}, text))

    async def send_raw(self, data: str) -> None:
        await self.ws.send(data)

    async def _next_frame(self) -> tuple[str, dict[str, str], str]:
        while True:
            message = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
            if isinstance(message, bytes):
                message = message.decode("utf-8")
            if message in ("\n", "\r\n"):
                continue  # heart-beat
            return parse(message)

    async def event(self, code: int | None = None) -> Event:
        """The next event not read yet (asserting its code when given)."""
        while self._seen >= len(self.events):
            command, headers, body = await self._next_frame()
            assert command == "MESSAGE", (command, headers, body)
            self.events.append(Event(headers, json.loads(body)))
        event = self.events[self._seen]
        self._seen += 1
        if code is not None:
            assert event.body["eventCode"] == code, f"expected event {code}, got {event.body}"
        return event

    async def refusal(self, code: int, slug: str) -> Event:
        event = await self.event(code)
        assert event.body["serviceContent"]["error"] == slug, event.body
        return event

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
