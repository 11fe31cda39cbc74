"""The chat through the real consumer: pairing, messages, leaving, and a second dialog."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from dialogs.models import Dialog, Message
from matching.models import PoolUser
from chat import events

from tests.support.inprocess import pair, paired

Status = PoolUser.Status


@database_sync_to_async
def user(pk) -> PoolUser:
    return PoolUser.objects.get(pk=pk)


@database_sync_to_async
def user_of(channel_status) -> list[PoolUser]:
    return list(PoolUser.objects.filter(status=channel_status))


@database_sync_to_async
def dialog(pk) -> Dialog:
    return Dialog.objects.get(pk=pk)


@database_sync_to_async
def count(model) -> int:
    return model.objects.count()


@database_sync_to_async
def channel_of(user_id) -> str:
    return PoolUser.objects.get(pk=user_id).channel_name


async def test_seed_flow(chat):
    bob, alice = await chat(), await chat()
    await bob.send_json("/start", {"name": "Bob", "languageCode": "ru",
                              "userAttributes": {"gender": "male", "age": None},
                              "targetAttributes": {"gender": "female", "age": None}}, receipt=True)
    await bob.expect_nothing(0.3)
    await alice.send_json("/start", {"name": "Alice", "languageCode": "RU",
                                "userAttributes": {"gender": "female", "age": 30},
                                "targetAttributes": {"gender": "male"}}, receipt=True)
    eb, ea = await paired(bob, alice)
    chat_id, bob_id, alice_id = eb["chatUUID"], eb["senderUUID"], ea["senderUUID"]
    assert eb == {"chatUUID": chat_id, "senderUUID": bob_id, "eventCode": 10, "content": None,
                  "serviceContent": {"partner": {"name": "Alice", "languageCode": "ru",
                                                 "userAttributes": {"gender": "female", "age": 30}}}}
    assert ea["serviceContent"] == {"partner": {"name": "Bob", "languageCode": "ru",
                                                "userAttributes": {"gender": "male", "age": None}}}
    assert (await user(bob_id)).name == "Bob"

    await bob.message(chat_id, bob_id, "hello")
    for client in (bob, alice):
        assert await client.event() == {"chatUUID": chat_id, "senderUUID": bob_id, "eventCode": 20,
                                        "serviceContent": None, "content": "hello"}
    await alice.message(chat_id, alice_id, "привет 😀")
    for client in (bob, alice):
        assert (await client.event_with(20))["content"] == "привет 😀"

    await alice.stop(chat_id, alice_id)
    for client in (bob, alice):
        assert await client.event() == {"chatUUID": chat_id, "senderUUID": alice_id, "eventCode": 30,
                                        "serviceContent": {"reason": "stop"}, "content": None}
    await bob.expect_nothing(0.3)
    await alice.expect_nothing(0.3)
    d = await dialog(chat_id)
    assert (d.status, d.end_reason, str(d.ended_by_id)) == ("ended", "stop", alice_id)
    assert await count(Message) == 2


async def test_app_prefixed_destinations(chat):
    a, b = await chat(), await chat()
    await a.send_json("/app/start", {"languageCode": "en"}, receipt=True)
    await b.send_json("/app/start", {"languageCode": "en"}, receipt=True)
    ea, eb = await paired(a, b)
    await a.send_json("/app/message", {"chatUUID": ea["chatUUID"], "senderUUID": ea["senderUUID"], "content": "x"}, receipt=True)
    assert (await b.event_with(20))["content"] == "x"
    await a.event_with(20)
    await b.send_json("/app/stop", {"chatUUID": eb["chatUUID"], "senderUUID": eb["senderUUID"], "content": None}, receipt=True)
    assert (await a.event_with(30))["serviceContent"] == {"reason": "stop"}


async def test_stop_while_waiting_cancels(chat):
    a = await chat()
    await a.start()
    await a.send_json("/stop", {}, receipt=True)
    assert await a.event() == {"chatUUID": None, "senderUUID": None, "eventCode": 30,
                               "serviceContent": {"reason": "cancelled"}, "content": None}
    [cancelled] = await user_of(Status.CANCELLED)
    b = await chat()
    await b.start()
    await b.expect_nothing(0.3)
    await a.expect_nothing(0.3)
    assert cancelled.left_at is not None
    # The cancelled connection may start again, and is paired with the one now waiting.
    await a.start()
    await paired(a, b)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"chatUUID": 5}'])
async def test_stop_while_waiting_cancels_whatever_the_body(chat, body):
    a = await chat()
    await a.start()
    await a.send_json("/stop", body, receipt=True)
    assert (await a.event_with(30))["serviceContent"] == {"reason": "cancelled"}


async def test_disconnect_while_waiting_leaves_the_pool(chat):
    a, b = await chat(), await chat()
    await a.start()
    await a.close()
    [gone] = await user_of(Status.GONE)
    await b.start()
    await b.expect_nothing(0.5)
    assert (await user_of(Status.WAITING))[0].channel_name != gone.channel_name
    c = await chat()
    await c.start()
    await paired(b, c)


@pytest.mark.parametrize("how", ["socket", "stomp"])
async def test_disconnect_in_a_dialog_tells_the_partner(chat, how):
    a, b = await chat(), await chat()
    ea, eb = await pair(a, b)
    if how == "socket":
        await a.close()
    else:
        await a.stomp_disconnect()
    assert await b.event() == {"chatUUID": eb["chatUUID"], "senderUUID": ea["senderUUID"], "eventCode": 30,
                               "serviceContent": {"reason": "disconnect"}, "content": None}
    await b.expect_nothing(0.3)
    d = await dialog(ea["chatUUID"])
    assert (d.end_reason, str(d.ended_by_id)) == ("disconnect", ea["senderUUID"])
    # The partner's dialog has ended: its messages are refused, and it can start again.
    await b.message(eb["chatUUID"], eb["senderUUID"], "anyone?")
    assert (await b.event_with(21))["serviceContent"]["error"] == "dialog_ended"


async def ended_then_paired_again(chat) -> tuple[list, dict, dict, dict, dict]:
    """a and b in a dialog that b stops; then a and c in a new one: the clients and four 10 events."""
    a, b, c = await chat(), await chat(), await chat()
    first_a, first_b = await pair(a, b)
    await b.stop(first_b["chatUUID"], first_b["senderUUID"])
    await a.event_with(30)
    await b.event_with(30)
    second_a, second_c = await pair(a, c)
    return [a, b, c], first_a, first_b, second_a, second_c


async def test_start_again_after_the_dialog_gets_a_new_sender_uuid(chat):
    (a, b, c), first_a, first_b, second_a, second_c = await ended_then_paired_again(chat)
    assert second_a["senderUUID"] != first_a["senderUUID"]
    assert second_a["chatUUID"] != first_a["chatUUID"]
    assert (await user(first_a["senderUUID"])).status == Status.ENDED  # kept, as history
    # The old senderUUID no longer speaks for the connection, in either dialog.
    await a.message(second_a["chatUUID"], first_a["senderUUID"], "old me")
    assert (await a.event_with(21))["serviceContent"]["error"] == "not_participant"
    await a.message(second_a["chatUUID"], second_a["senderUUID"], "new me")
    assert (await c.event_with(20))["senderUUID"] == second_a["senderUUID"]
    await a.event_with(20)
    # b starts again too: it is paired with nobody (a and c are busy), with a new id.
    await b.start()
    await b.expect_nothing(0.3)


async def test_no_event_of_an_ended_dialog_after_the_next_pairing(chat, layer):
    (a, b, c), old_a, old_b, new_a, new_c = await ended_then_paired_again(chat)

    # Late events of the old dialog, as a slow layer or another process could deliver them.
    channel = await channel_of(new_a["senderUUID"])
    for code, extra in ((events.MESSAGE, {"content": "late"}), (events.LEFT, {"service": {"reason": "timeout"}})):
        await layer.send(channel, events.chat_event(code, old_a["chatUUID"], sender=old_b["senderUUID"], **extra))
    await a.expect_nothing(0.5)
    # The current dialog still flows.
    await c.message(new_c["chatUUID"], new_c["senderUUID"], "now")
    assert (await a.event_with(20))["chatUUID"] == new_a["chatUUID"]


async def test_a_10_is_taken_once(chat, layer):
    """A process whose listening connection was lost gets its connections' 10s again
    (randomchat.pair_notify): a connection takes a dialog's 10 once, and one that trails a
    dialog that has ended does not begin it again."""
    (a, b, c), old_a, old_b, new_a, new_c = await ended_then_paired_again(chat)

    channel = await channel_of(new_a["senderUUID"])
    for ten in (new_a, old_a):
        partner = {"partner": {"name": "someone", "languageCode": "en", "userAttributes": {}}}
        await layer.send(channel, events.chat_event(events.PAIRED, ten["chatUUID"], sender=ten["senderUUID"],
                                                    service=partner))
    await a.expect_nothing(0.5)
    await c.message(new_c["chatUUID"], new_c["senderUUID"], "still here")
    assert (await a.event_with(20))["chatUUID"] == new_a["chatUUID"]


async def test_claimed_user_whose_connection_is_gone_is_not_paired(chat):
    a, b = await chat(), await chat()
    await a.start()
    a_id = (await user_of(Status.WAITING))[0].pk
    await a.close()
    await b.start()
    await b.expect_nothing(0.5)
    assert (await user(a_id)).status == Status.GONE
    assert await count(Dialog) == 0


async def test_a_connection_whose_leave_failed_is_not_paired_until_the_heartbeat_releases_it(chat, layer, monkeypatch):
    from randomchat import consumers
    from randomchat.process import closing_channels

    a = await chat()
    await a.start()
    [waiting] = await user_of(Status.WAITING)

    def leave_fails(**kwargs):
        raise RuntimeError("the database is away")

    monkeypatch.setattr(consumers, "user_leave", leave_fails)
    await a.close()
    monkeypatch.undo()
    assert waiting.channel_name in closing_channels
    b = await chat()
    await b.start()  # `a` waited, compatible, but its connection closed
    await b.expect_nothing(0.5)
    assert (await user(waiting.pk)).status == Status.WAITING
    await reconcile(layer)
    assert (await user(waiting.pk)).status == Status.GONE
    assert waiting.channel_name not in closing_channels


async def test_a_connection_that_left_is_forgotten(chat):
    from randomchat.process import closing_channels

    a = await chat()
    await a.start()
    [waiting] = await user_of(Status.WAITING)
    await a.close()
    assert (await user(waiting.pk)).status == Status.GONE
    assert waiting.channel_name not in closing_channels


async def store_unresponsive_user(channel: str, **fields) -> uuid.UUID:
    """A waiting user of this process whose connection is lost: no consumer holds its channel,
    which closed and whose leave did not commit (the database failed it, say)."""
    from randomchat.process import closing_channels, current_process

    process = await current_process()
    closing_channels.add(channel)

    @database_sync_to_async
    def store():
        return PoolUser.objects.create(language="en", channel_name=channel, process=process, **fields).pk

    return await store()


async def reconcile(layer) -> None:
    """What the process's next heartbeat does: release users whose connection is lost."""
    from django.conf import settings

    from matching.liveness import HeartbeatWatch
    from randomchat.process import beat_once, current_process

    watch = HeartbeatWatch(settings.RANDOMCHAT_PROCESS_TIMEOUT, max_gap=2 * settings.RANDOMCHAT_PROCESS_HEARTBEAT)
    await beat_once(await current_process(), layer, watch)


async def test_waiting_user_whose_connection_is_lost_is_not_paired(chat, layer):
    dead = await store_unresponsive_user(await layer.new_channel(), gender="male")
    c = await chat()
    await c.start(targetAttributes={"gender": "female"})  # waits behind `dead`, refuses it
    b = await chat()
    await b.start(userAttributes={"gender": "female"})  # `dead` waited longest, but is lost
    eb, ec = await paired(b, c)
    d = await dialog(eb["chatUUID"])
    assert {str(d.first_id), str(d.second_id)} == {eb["senderUUID"], ec["senderUUID"]}
    assert (await user(dead)).status == Status.WAITING
    await reconcile(layer)
    assert (await user(dead)).status == Status.GONE


async def test_waiting_user_whose_connection_is_lost__the_newcomer_waits_for_the_next(chat, layer):
    dead = await store_unresponsive_user(await layer.new_channel())
    b = await chat()
    await b.start()
    await b.expect_nothing(0.5)
    await reconcile(layer)
    assert (await user(dead)).status == Status.GONE
    c = await chat()
    await c.start()
    await paired(b, c)


async def test_a_busy_partner_is_paired_without_waiting_for_it(chat, monkeypatch):
    """Pairing asks nothing of the waiting user's connection: a consumer that is slow to
    take its events gets its 10 late, and the newcomer gets its own at once."""
    from randomchat.consumers import ChatConsumer

    slow: set[str] = set()
    deliver = ChatConsumer.chat_event

    async def slow_event(self, event):
        if self.channel_name in slow:
            await asyncio.sleep(1.0)
        await deliver(self, event)

    monkeypatch.setattr(ChatConsumer, "chat_event", slow_event)
    a = await chat()
    await a.start(userAttributes={"gender": "male"})
    slow.add((await user_of(Status.WAITING))[0].channel_name)
    b = await chat()
    await b.start(targetAttributes={"gender": "male"})
    eb = await b.event_with(10, timeout=0.5)
    ea = await a.event_with(10, timeout=5)
    assert ea["chatUUID"] == eb["chatUUID"]
