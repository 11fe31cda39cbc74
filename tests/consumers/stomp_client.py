"""A STOMP test client over channels' WebsocketCommunicator.

Outbound frames are written by hand (bytes in, bytes out) so that tests control every
byte; inbound messages are parsed with the project's own FrameParser, and each server
WebSocket message must hold exactly one frame or one heart-beat (`\\n`).
"""

from __future__ import annotations

import asyncio

from channels.testing import WebsocketCommunicator

from randomchat.stomp import HEARTBEAT, Frame, FrameParser

ALL_SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"]


class Closed(AssertionError):
    """The server closed the WebSocket where a frame was expected."""

    def __init__(self, code):
        super().__init__(f"the server closed the connection (code {code})")
        self.code = code


def raw_frame(command: str, headers=(), body: bytes | str = b"") -> bytes:
    """`COMMAND LF (key:value LF)* LF body NUL`; header text is written as given (unescaped)."""
    if isinstance(body, str):
        body = body.encode()
    head = "".join(f"{key}:{value}\n" for key, value in headers)
    return f"{command}\n{head}\n".encode() + body + b"\x00"


class StompClient:
    def __init__(self, application, path="/connect", subprotocols=None, headers=None):
        self.ws = WebsocketCommunicator(application, path, subprotocols=subprotocols, headers=headers)
        # Before CONNECTED nothing is escaped; afterwards the negotiated version decides.
        self.parser = FrameParser(version="1.0", max_frame_size=1 << 22)
        self.subprotocol: str | None = None
        self.opened = False
        self.disconnected = False

    # WebSocket level

    async def open(self) -> str | None:
        accepted, subprotocol = await self.ws.connect(timeout=5)
        assert accepted, f"handshake refused: {subprotocol}"
        self.subprotocol = subprotocol
        self.opened = True
        return subprotocol

    async def send_bytes(self, data: bytes, *, binary: bool = False) -> None:
        """One WebSocket message; text messages must be valid UTF-8."""
        if binary:
            await self.ws.send_input({"type": "websocket.receive", "bytes": data})
        else:
            await self.ws.send_input({"type": "websocket.receive", "text": data.decode("utf-8")})

    async def send(self, command: str, headers=(), body: bytes | str = b"", *, binary: bool = False) -> None:
        await self.send_bytes(raw_frame(command, headers, body), binary=binary)

    async def receive_item(self, timeout: float = 3) -> Frame | object:
        """The next frame or HEARTBEAT; raises Closed if the server closed instead."""
        message = await self.ws.receive_output(timeout)
        if message["type"] == "websocket.close":
            raise Closed(message.get("code"))
        assert message["type"] == "websocket.send", message
        assert message.get("bytes") is None and isinstance(message.get("text"), str), (
            f"the server must send text messages: {message!r}"
        )
        items = self.parser.feed(message["text"].encode("utf-8"))
        assert len(items) == 1 and self.parser.buffered == 0, (
            f"one frame per WebSocket message expected, got {message['text']!r}"
        )
        if items[0] is HEARTBEAT:
            assert message["text"] == "\n", "a heart-beat is exactly one LF"
        return items[0]

    async def receive(self, timeout: float = 3, *, heartbeats: bool = False) -> Frame:
        """The next frame, skipping heart-beats (unless heartbeats=True asserts there are none)."""
        while True:
            item = await self.receive_item(timeout)
            if item is HEARTBEAT:
                assert heartbeats is False, "unexpected heart-beat"
                continue
            return item

    async def expect(self, command: str, timeout: float = 3, **headers: str) -> Frame:
        frame = await self.receive(timeout)
        assert frame.command == command, f"expected {command}, got {frame!r}"
        for key, value in headers.items():
            key = key.replace("_", "-")
            assert frame.get(key) == value, f"{key}: expected {value!r} in {frame!r}"
        return frame

    async def expect_receipt(self, receipt_id: str) -> Frame:
        return await self.expect("RECEIPT", receipt_id=receipt_id)

    async def expect_closed(self, timeout: float = 3) -> int | None:
        message = await self.ws.receive_output(timeout)
        assert message["type"] == "websocket.close", f"expected a close, got {message!r}"
        return message.get("code")

    async def expect_error(self, contains: str | None = None, **headers: str) -> Frame:
        """Exactly one ERROR frame with a `message` header, then the close, then nothing."""
        frame = await self.expect("ERROR", **headers)
        message = frame.get("message")
        assert message, f"ERROR without a message header: {frame!r}"
        if contains is not None:
            assert contains.lower() in message.lower(), f"{contains!r} not in {message!r}"
        assert frame.get("content-length") == str(len(frame.body))
        await self.expect_closed()
        await self.expect_nothing()
        return frame

    async def expect_nothing(self, timeout: float = 0.2) -> None:
        assert await self.ws.receive_nothing(timeout=timeout), "unexpected output from the server"

    async def close(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        try:
            await self.ws.disconnect(timeout=5)
        except asyncio.CancelledError:
            pass  # the application was already cancelled by a timed-out receive

    # STOMP level

    async def connect(self, accept_version: str | None = "1.2", heart_beat: str | None = "0,0",
                      command: str = "CONNECT", extra=()) -> Frame:
        if not self.opened:
            await self.open()
        headers = []
        if accept_version is not None:
            headers.append(("accept-version", accept_version))
        if heart_beat is not None:
            headers.append(("heart-beat", heart_beat))
        headers.extend(extra)
        await self.send(command, headers)
        frame = await self.expect("CONNECTED")
        self.parser.version = frame.get("version")
        return frame

    async def subscribe(self, sub_id: str = "sub-0", destination: str = "/user/dialog", receipt: str = "sub") -> None:
        await self.send("SUBSCRIBE", [("id", sub_id), ("destination", destination), ("receipt", receipt)])
        await self.expect_receipt(receipt)
