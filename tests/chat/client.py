"""A small STOMP client over channels' WebsocketCommunicator, for the chat tests.

It CONNECTs, SUBSCRIBEs to /user/dialog and hands back events as parsed JSON, checking the
MESSAGE headers of PROTOCOL.md §4 on every one. Frames are parsed with randomchat.stomp.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from channels.testing import WebsocketCommunicator

from randomchat.asgi import application
from randomchat.stomp import HEARTBEAT, Frame, FrameParser

EVENT_KEYS = {"chatUUID", "senderUUID", "eventCode", "serviceContent", "content"}
SUBSCRIPTION = "sub-0"


class Closed(AssertionError):
    """The server closed the WebSocket where a frame was expected."""


def encode(command: str, headers: dict, body: bytes = b"") -> str:
    head = "".join(f"{key}:{value}\n" for key, value in headers.items())
    return f"{command}\n{head}content-length:{len(body)}\n\n".encode() + body + b"\x00"


class ChatClient:
    receipts = itertools.count(1)

    def __init__(self) -> None:
        self.ws = WebsocketCommunicator(application, "/connect", subprotocols=["v12.stomp"])
        self.parser = FrameParser(max_frame_size=1 << 22)
        self.inbox: list[Frame] = []  # frames received but not asked for yet
        self.message_ids: set[str] = set()
        self.open = False

    async def connect(self, *, subscribe: bool = True) -> "ChatClient":
        accepted, subprotocol = await self.ws.connect(timeout=5)
        assert accepted and subprotocol == "v12.stomp"
        self.open = True
        await self.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "heart-beat": "0,0"})
        assert (await self.frame()).command == "CONNECTED"
        if subscribe:
            await self.send_frame("SUBSCRIBE", {"id": SUBSCRIPTION, "destination": "/user/dialog"}, receipt=True)
        return self

    async def send_frame(
        self, command: str, headers: dict, body: bytes = b"", *, receipt: bool = False, timeout: float = 10
    ) -> None:
        headers = dict(headers)
        receipt_id = None
        if receipt:
            receipt_id = headers["receipt"] = f"r-{next(self.receipts)}"
        data = encode(command, headers, body)
        try:
            await self.ws.send_to(text_data=data.decode())
        except UnicodeDecodeError:  # not UTF-8: only a binary WebSocket message can carry it
            await self.ws.send_to(bytes_data=data)
        if receipt_id is not None:
            await self.receipt(receipt_id, timeout)

    async def send(self, destination: str, body: dict | bytes | str, *, receipt: bool = True, timeout=10) -> None:
        """SEND a JSON body; by default wait for its RECEIPT (the frame was fully handled)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = {"destination": destination, "content-type": "application/json"}
        await self.send_frame("SEND", headers, body, receipt=receipt, timeout=timeout)

    async def start(self, timeout: float = 10, **fields) -> None:
        await self.send("/start", {"languageCode": "en", **fields}, timeout=timeout)

    async def message(self, chat, sender, content) -> None:
        await self.send("/message", {"chatUUID": chat, "senderUUID": sender, "content": content})

    async def stop(self, chat=None, sender=None) -> None:
        await self.send("/stop", {"chatUUID": chat, "senderUUID": sender, "content": None})

    # Receiving

    async def _read(self, timeout: float) -> None:
        output = await self.ws.receive_output(timeout)
        if output["type"] == "websocket.close":
            self.open = False
            raise Closed(f"closed with code {output.get('code')}")
        data = output.get("text")
        data = data.encode() if data is not None else output["bytes"]
        self.inbox += [item for item in self.parser.feed(data) if item is not HEARTBEAT]

    async def frame(self, timeout: float = 5) -> Frame:
        while not self.inbox:
            await self._read(timeout)
        return self.inbox.pop(0)

    async def receipt(self, receipt_id: str, timeout: float = 10) -> None:
        """Wait for a RECEIPT; frames before it stay in the inbox, in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for i, frame in enumerate(self.inbox[seen:], seen):
                assert frame.command != "ERROR", f"ERROR: {frame.get('message')}"
                if frame.command == "RECEIPT" and frame.get("receipt-id") == receipt_id:
                    del self.inbox[i]
                    return
            seen = len(self.inbox)
            await self._read(max(0.01, deadline - loop.time()))

    async def event(self, timeout: float = 5) -> dict:
        """The next event, after checking its MESSAGE frame against PROTOCOL.md §4."""
        frame = await self.frame(timeout)
        assert frame.command == "MESSAGE", frame
        assert frame.get("destination") == "/user/dialog"
        assert frame.get("subscription") == SUBSCRIPTION
        assert frame.get("content-type") == "application/json"
        assert frame.get("content-length") == str(len(frame.body))
        message_id = frame.get("message-id")
        assert message_id and message_id not in self.message_ids
        self.message_ids.add(message_id)
        event = json.loads(frame.body)
        assert set(event) == EVENT_KEYS, event
        return event

    async def event_with(self, code: int, timeout: float = 5) -> dict:
        event = await self.event(timeout)
        assert event["eventCode"] == code, event
        return event

    async def nothing(self, timeout: float = 0.3) -> None:
        assert not self.inbox, self.inbox
        assert await self.ws.receive_nothing(timeout=timeout), "unexpected output from the server"

    async def close(self) -> None:
        if self.open:
            self.open = False
            await self.ws.disconnect(timeout=5)

    async def stomp_disconnect(self) -> None:
        await self.send_frame("DISCONNECT", {}, receipt=True)
        output = await self.ws.receive_output(5)
        assert output["type"] == "websocket.close"
        self.open = False
        # As daphne does once the close handshake is over.
        await self.ws.disconnect(timeout=5)


async def paired(a: ChatClient, b: ChatClient) -> tuple[dict, dict]:
    """Both clients' 10 events, which must name the same new dialog."""
    ea, eb = await a.event_with(10), await b.event_with(10)
    assert ea["chatUUID"] == eb["chatUUID"] is not None
    assert ea["senderUUID"] != eb["senderUUID"]
    return ea, eb
