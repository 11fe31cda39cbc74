"""The floor for bench/dialogs.py: the least a Channels server can do for a chat message.

A tiny ASGI application, served by daphne exactly like randomchat:

    PYTHONPATH=bench:. .venv/bin/daphne -p 8100 floor:application

It speaks just enough STOMP, with randomchat's own FrameParser and encode_frame, that the
benchmark's clients cannot tell it from randomchat: CONNECT gets CONNECTED, SUBSCRIBE is
remembered, /start pairs the connection with the previous /start of the same language
(an in-process dict, so one process only) and sends both an event 10, and /message does a
group_send of the body it received to the pair's group, where each member sends it out as
a MESSAGE frame with the same headers randomchat's events carry; a `receipt` header gets
its RECEIPT. No validation, no JSON parsing of messages, no database, no rate limits, no
heart-beats.

`python bench/floor.py` serves it on a free port until Ctrl-C (for a look by hand); the
benchmark itself is bench/dialogs.py, which starts it side by side with randomchat.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import uuid

if __name__ != "__main__":
    import django
    from django.conf import settings

    if not settings.configured:
        redis_url = os.environ.get("REDIS_URL")
        layer = (
            {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url], "capacity": 1000, "expiry": 30}}
            if redis_url
            else {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
        )
        settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS={"default": layer}, USE_TZ=True)
        django.setup()

    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import re_path

    from randomchat.stomp import HEARTBEAT, Frame, FrameError, FrameParser, encode_frame

    _waiting: dict[str, str] = {}  # language -> channel name of the connection that waits

    class FloorConsumer(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            self.parser = FrameParser()
            self.session = uuid.uuid4().hex
            self.ids = itertools.count(1)
            self.sub = None
            self.group = None
            offered = self.scope.get("subprotocols") or []
            await self.accept(subprotocol="v12.stomp" if "v12.stomp" in offered else None)

        async def disconnect(self, code) -> None:
            for language, channel in list(_waiting.items()):
                if channel == self.channel_name:
                    del _waiting[language]

        async def receive(self, text_data=None, bytes_data=None) -> None:
            try:
                items = self.parser.feed(text_data.encode() if text_data is not None else bytes_data)
            except FrameError:
                await self.close()
                return
            for frame in items:
                if frame is HEARTBEAT:
                    continue
                command = frame.command
                if command == "SEND":
                    destination = frame.get("destination")
                    if destination == "/message":
                        await self.channel_layer.group_send(self.group, {"type": "floor.message", "body": frame.body})
                    elif destination == "/start":
                        await self.start(frame.body)
                elif command == "SUBSCRIBE":
                    self.sub = frame.get("id")
                elif command in ("CONNECT", "STOMP"):
                    await self.send(text_data=encode_frame(
                        Frame("CONNECTED", (("version", "1.2"), ("heart-beat", "0,0"), ("session", self.session)))
                    ).decode())
                receipt = frame.get("receipt")
                if receipt is not None:
                    await self.send(text_data=encode_frame(Frame("RECEIPT", (("receipt-id", receipt),))).decode())

        async def start(self, body: bytes) -> None:
            language = json.loads(body).get("languageCode", "")
            partner = _waiting.pop(language, None)
            if partner is None:
                _waiting[language] = self.channel_name
                return
            chat = str(uuid.uuid4())
            group = "floor." + chat
            for channel in (partner, self.channel_name):
                await self.channel_layer.group_add(group, channel)
                await self.channel_layer.send(channel, {"type": "floor.paired", "chat": chat})

        async def floor_paired(self, event) -> None:
            self.group = "floor." + event["chat"]
            body = {"chatUUID": event["chat"], "senderUUID": str(uuid.uuid4()), "eventCode": 10,
                    "serviceContent": None, "content": None}
            await self.floor_message({"body": json.dumps(body).encode()})

        async def floor_message(self, event) -> None:
            frame = Frame(
                "MESSAGE",
                (
                    ("destination", "/user/dialog"),
                    ("subscription", self.sub),
                    ("message-id", f"{self.session}-{next(self.ids)}"),
                    ("content-type", "application/json"),
                ),
                event["body"],
            )
            await self.send(text_data=encode_frame(frame).decode())

    application = ProtocolTypeRouter({"websocket": URLRouter([re_path(r"^connect/?$", FloorConsumer.as_asgi())])})


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness as h

    server = h.Daphne(h.server_env({}), app="floor:application", name="floor", pythonpath=[str(h.BENCH), str(h.REPO)]).start()
    print(f"floor serving {server.url} (Ctrl-C stops it)")
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
