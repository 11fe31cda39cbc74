"""Random sequences of valid and invalid frames from several clients never crash the consumer
and leave the pool and the dialogs consistent."""

import asyncio
import os
import json
import logging

import pytest
from channels.layers import get_channel_layer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from dialogs.models import Dialog
from matching.models import PoolUser
from randomchat.asgi import application
from randomchat.stomp import FrameParser
from tests.support.inprocess import StompClient, raw_frame

MAX_CLIENTS = 4

start_bodies = st.fixed_dictionaries(
    {"languageCode": st.sampled_from(["en", "ru", "EN", "x", None])},
    optional={
        "name": st.one_of(st.none(), st.text(max_size=70)),
        "userAttributes": st.fixed_dictionaries(
            {}, optional={"gender": st.sampled_from(["male", "female", "other", "x", None]),
                          "age": st.one_of(st.none(), st.integers(-5, 160))}),
        "targetAttributes": st.fixed_dictionaries(
            {}, optional={"gender": st.sampled_from(["male", "female", None]),
                          "age": st.one_of(st.none(), st.integers(0, 150),
                                           st.fixed_dictionaries({"min": st.integers(0, 80), "max": st.integers(0, 150)}))}),
    },
)
garbage = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"FOO\n\n\x00", b"SEND\n\n\x00", b"SEND\ndestination:/nowhere\n\n\x00",
                     b"SUBSCRIBE\nid:0\n\n\x00", b"SEND\ncontent-length:abc\n\n\x00", b"\n", b"\r\n"]),
)


class Connection:
    def __init__(self):
        self.client = StompClient(application, "/connect", subprotocols=["v12.stomp"])
        self.events: list[dict] = []
        self.closed = False

    async def drain(self, timeout=0.02):
        """Read everything the server has sent; note the close."""
        while not self.closed:
            if await self.client.ws.receive_nothing(timeout=timeout):
                return
            message = await self.client.ws.receive_output(1)
            if message["type"] == "websocket.close":
                self.closed = True
                await self.client.close()
                return
            for item in self.client.parser.feed(message["text"].encode()):
                if getattr(item, "command", None) == "MESSAGE":
                    event = json.loads(item.body)
                    assert set(event) == {"chatUUID", "senderUUID", "eventCode", "serviceContent", "content"}
                    self.events.append(event)
                elif getattr(item, "command", None) == "CONNECTED":
                    self.client.parser.version = item.get("version")

    def ids(self):
        for event in reversed(self.events):
            if event["eventCode"] == 10:
                return {"chatUUID": event["chatUUID"], "senderUUID": event["senderUUID"]}
        return {"chatUUID": None, "senderUUID": None}


class ChatMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop  # one for the whole run: the in-memory layer binds to it

    def __init__(self):
        super().__init__()
        self.connections: list[Connection] = []

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def live(self):
        return [c for c in self.connections if not c.closed]

    def pick(self, index: int) -> Connection | None:
        """A connection still open, or None. Choices never depend on what the server did
        (closes race with our reads), so that hypothesis can replay a run exactly."""
        if not self.connections:
            return None
        conn = self.connections[index % len(self.connections)]
        return None if conn.closed else conn

    @precondition(lambda self: len(self.connections) < 2 * MAX_CLIENTS)
    @rule(subscribe=st.booleans())
    def open(self, subscribe):
        conn = Connection()
        self.connections.append(conn)
        self.run(conn.client.open())
        self.run(conn.client.send_bytes(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"))
        if subscribe:
            self.run(conn.client.send_bytes(b"SUBSCRIBE\nid:0\ndestination:/user/dialog\n\n\x00"))
        self.run(conn.drain())

    @rule(index=st.integers(0, 2 * MAX_CLIENTS), body=start_bodies)
    def start(self, index, body):
        conn = self.pick(index)
        if conn is None:
            return
        self.run(conn.client.send_bytes(raw_frame("SEND", [("destination", "/start")], json.dumps(body))))
        self.run(self.settle())

    @rule(index=st.integers(0, 2 * MAX_CLIENTS), other=st.integers(0, 2 * MAX_CLIENTS),
          content=st.one_of(st.text(max_size=20), st.none(), st.integers()),
          own=st.booleans(), destination=st.sampled_from(["/message", "/stop", "/app/message", "/app/stop"]))
    def speak(self, index, other, content, own, destination):
        conn = self.pick(index)
        if conn is None:
            return
        ids = (conn if own else self.connections[other % len(self.connections)]).ids()
        body = json.dumps({**ids, "content": content})
        self.run(conn.client.send_bytes(raw_frame("SEND", [("destination", destination)], body)))
        self.run(self.settle())

    @rule(index=st.integers(0, 2 * MAX_CLIENTS), junk=garbage)
    def junk(self, index, junk):
        conn = self.pick(index)
        if conn is None:
            return
        self.run(conn.client.send_bytes(junk, binary=True))
        self.run(self.settle())

    @rule(index=st.integers(0, 2 * MAX_CLIENTS), clean=st.booleans())
    def leave(self, index, clean):
        conn = self.pick(index)
        if conn is None:
            return
        if clean:
            self.run(conn.client.send_bytes(b"DISCONNECT\nreceipt:bye\n\n\x00"))
            self.run(conn.drain())
        conn.closed = True
        self.run(conn.client.close())
        self.run(self.settle())

    async def settle(self):
        for _ in range(2):
            for conn in self.live():
                await conn.drain()

    @invariant()
    def consistent(self):
        held = list(PoolUser.objects.filter(status__in=PoolUser.HELD))
        channels = [u.channel_name for u in held]
        assert len(channels) == len(set(channels)), "a connection holds two users"
        active = list(Dialog.objects.filter(status=Dialog.Status.ACTIVE))
        participants = [p for d in active for p in (d.first_id, d.second_id)]
        assert len(participants) == len(set(participants)), "a user in two active dialogs"
        paired = {u.pk for u in held if u.status == PoolUser.Status.PAIRED}
        assert paired == set(participants), "paired users and active dialogs disagree"

    def teardown(self):
        for conn in self.live():
            self.run(conn.client.close())
        self.run(self.settle())
        self.run(get_channel_layer().flush())
        self.consistent()
        # Every connection is gone: nobody is left waiting or in a dialog.
        assert not PoolUser.objects.filter(status__in=PoolUser.HELD).exists()
        assert not Dialog.objects.filter(status=Dialog.Status.ACTIVE).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(600)
def test_random_frames_never_crash_and_stay_consistent(caplog):
    caplog.set_level(logging.INFO)
    ChatMachine.loop = loop = asyncio.new_event_loop()
    try:
        run_state_machine_as_test(
            ChatMachine,
            settings=settings(max_examples=int(os.environ.get("STATEFUL_EXAMPLES", "20")), stateful_step_count=20,
                              deadline=None, suppress_health_check=list(HealthCheck)),
        )
    finally:
        pending = asyncio.all_tasks(loop)  # the process heartbeat loop, if a /start registered it
        for task in pending:
            task.cancel()
        if pending:  # gather() of nothing would make a future on another loop
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes[:3]]
