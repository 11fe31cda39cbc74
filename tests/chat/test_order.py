"""Both participants see a dialog's events in the order they were committed."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from dialogs.models import Dialog
from tests.support.inprocess import pair, raw_frame

pytestmark = pytest.mark.timeout(120)


def body(event: dict, content) -> dict:
    return {"chatUUID": event["chatUUID"], "senderUUID": event["senderUUID"], "content": content}


async def test_messages_sent_at_the_same_moment_arrive_in_one_order_for_both(chat):
    a, b = await chat(), await chat()
    ea, eb = await pair(a, b)
    for i in range(20):
        await asyncio.gather(
            a.send_json("/message", body(ea, f"a{i}")),
            b.send_json("/message", body(eb, f"b{i}")),
        )
        seen_by_a = [(await a.event_with(20))["content"] for _ in range(2)]
        seen_by_b = [(await b.event_with(20))["content"] for _ in range(2)]
        assert seen_by_a == seen_by_b, f"round {i}"


def stomp_send(destination: str, payload: dict, receipt: str | None = None) -> bytes:
    data = json.dumps(payload).encode()
    headers = [("destination", destination), ("content-type", "application/json"), ("content-length", len(data))]
    if receipt is not None:
        headers.append(("receipt", receipt))
    return raw_frame("SEND", headers, data)


async def frames_until(client, count: int) -> list[str]:
    """The next `count` frames as short labels: `RECEIPT r`, or an event's code and slug."""
    labels = []
    for _ in range(count):
        frame = await client.receive()
        if frame.command == "RECEIPT":
            labels.append(f"RECEIPT {frame.get('receipt-id')}")
            continue
        assert frame.command == "MESSAGE", frame
        event = json.loads(frame.body)
        error = (event["serviceContent"] or {}).get("error")
        labels.append(f"{event['eventCode']} {error}" if error else str(event["eventCode"]))
    return labels


def without_refusals(codes: list[int]) -> list[int]:
    return [code for code in codes if code != 21]


async def test_no_message_after_the_30_when_messages_and_a_stop_cross(chat):
    """PROTOCOL.md §4: a message racing the partner's /stop is delivered to both before the
    30, or refused with 21 dialog_ended; nothing of the dialog comes after its 30."""
    for i in range(25):
        a, b = await chat(), await chat()
        ea, eb = await pair(a, b)
        await asyncio.gather(
            *(a.send_json("/message", body(ea, f"a{i}-{n}")) for n in range(3)),
            b.send_json("/stop", body(eb, None)),
        )
        seen = {}
        for name, client in (("a", a), ("b", b)):
            events = []
            while 30 not in [e["eventCode"] for e in events]:
                events.append(await client.event())
            if name == "a":  # the sender: one answer for each of its three messages
                while sum(e["eventCode"] in (20, 21) for e in events) < 3:
                    events.append(await client.event())
            await client.expect_nothing(0.2)  # no 20 of this dialog after its 30
            codes = [e["eventCode"] for e in events]
            assert without_refusals(codes)[-1] == 30 and set(without_refusals(codes)[:-1]) <= {20}, (i, name, codes)
            assert codes.index(30) < min([n for n, c in enumerate(codes) if c == 21], default=99), (i, name, codes)
            seen[name] = [e["content"] for e in events if e["eventCode"] == 20]
        assert seen["a"] == seen["b"], (i, seen)
        await a.close()
        await b.close()


async def wait_for_end(chat_uuid: str) -> None:
    ended = database_sync_to_async(lambda: Dialog.objects.filter(pk=chat_uuid, status=Dialog.Status.ENDED).exists())
    for _ in range(100):
        if await ended():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the /stop did not commit")


def hold_after_commit(monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """A message's task stops after its batch committed (`committed` is set) until `gate` is set."""
    from randomchat import consumers

    gate = asyncio.Event()
    committed = asyncio.Event()
    submit = consumers.MESSAGES.submit

    async def held_submit(draft):
        notices = await submit(draft)
        committed.set()
        await gate.wait()
        return notices

    monkeypatch.setattr(consumers.MESSAGES, "submit", held_submit)
    return committed, gate


async def test_a_message_committed_before_the_stop_reaches_both_before_the_30(chat, monkeypatch):
    """The race made certain: the sender's task is held after its batch committed, until the
    partner's /stop has committed and sent its 30."""
    committed, gate = hold_after_commit(monkeypatch)
    a, b = await chat(), await chat()
    ea, eb = await pair(a, b)
    sending = asyncio.ensure_future(a.send_json("/message", body(ea, "first")))
    await asyncio.wait_for(committed.wait(), 5)
    await b.send_json("/stop", body(eb, None))
    await wait_for_end(ea["chatUUID"])  # its 30 is sent while the 20 is held
    await b.expect_nothing(0.3)  # b's 30 waits for the 20 before it
    gate.set()
    await sending
    for client in (a, b):
        first, last = await client.event(), await client.event()
        assert (first["eventCode"], first["content"], last["eventCode"]) == (20, "first", 30)
        await client.expect_nothing(0.2)


def holding(monkeypatch, late):
    """The notices that `late(notice)` picks are sent only once the returned coroutine
    function is awaited (the others at once): a notice slow on its way."""
    from randomchat import consumers

    send_notices, gate, sends = consumers.send_notices, asyncio.Event(), []

    async def send_late(layer, notices):
        await gate.wait()
        await send_notices(layer, notices)

    async def held(layer, notices):
        await send_notices(layer, [n for n in notices if not late(n)])
        if any(late(n) for n in notices):
            sends.append(asyncio.ensure_future(send_late(layer, [n for n in notices if late(n)])))

    async def release():
        gate.set()
        await asyncio.gather(*sends)

    monkeypatch.setattr(consumers, "send_notices", held)
    return release


async def graced(stomp):
    """A ready client that asked for a resume grace (PROTOCOL.md §7.1)."""
    client = await stomp(connect=True, extra=(("resume-grace", "30"),))
    await client.subscribe()
    return client


async def test_what_the_last_dialog_owes_goes_before_the_next_10(chat, monkeypatch):
    """The partner's message was committed before the own /stop, but its notice is late: the
    connection pairs again before it comes. It is read back from the database, so it goes
    out before the 30, and both before the next dialog's 10 (a late notice of an ended dialog
    is dropped)."""
    committed, gate = hold_after_commit(monkeypatch)
    a, b, c = await chat(), await chat(), await chat()
    ea, eb = await pair(a, b)
    await c.start()  # waits
    sending = asyncio.ensure_future(b.send_json("/message", body(eb, "first")))
    await asyncio.wait_for(committed.wait(), 5)
    await a.send_bytes(stomp_send("/stop", body(ea, None), "s") + stomp_send("/start", {"languageCode": "en"}, "r"))
    assert await frames_until(a, 5) == ["20", "30", "RECEIPT s", "RECEIPT r", "10"]
    gate.set()
    await sending
    await a.expect_nothing(0.3)
    assert [(await b.event())["eventCode"] for _ in range(2)] == [20, 30]


async def test_a_30_still_on_its_way_goes_before_the_next_10(chat, monkeypatch):
    """The partner's /stop ended the dialog, and its 30 for this connection is late; the
    connection /starts meanwhile and is paired. The 30 is read back before the new 10."""
    release = holding(monkeypatch, lambda n: n.message.get("code") == 30)
    a, b, c = await chat(), await chat(), await chat()
    ea, eb = await pair(a, b)
    await c.start()  # waits
    await b.send_json("/stop", body(eb, None), receipt=True)
    await a.send_json("/start", {"languageCode": "en"}, receipt=True)
    first, second = await a.event(), await a.event()
    assert (first["eventCode"], first["chatUUID"]) == (30, ea["chatUUID"])
    assert second["eventCode"] == 10 and second["chatUUID"] != ea["chatUUID"]
    await release()
    await a.expect_nothing(0.3)


@pytest.mark.parametrize("ended", [False, True], ids=["going_on", "ended_since"])
async def test_a_connection_whose_participant_was_resumed_gets_nothing_more_of_that_dialog(
    stomp, chat, monkeypatch, ended
):
    """Another connection resumed this one's participant, and this one has not heard yet: it
    /starts and is paired. What the dialog it held says from then on, going on or ended since,
    belongs to the new connection."""
    release = holding(monkeypatch, lambda n: n.message["type"] == "resume.taken")
    old, partner, waiting, new = await graced(stomp), await chat(), await chat(), await chat()
    e_old, e_partner = await pair(old, partner)
    await waiting.start()
    await new.send_json("/resume", {"resumeToken": e_old["serviceContent"]["resumeToken"]})
    assert (await new.event())["chatUUID"] == e_old["chatUUID"]
    await partner.message(e_partner["chatUUID"], e_partner["senderUUID"], "for the new connection")
    assert (await new.event_with(20))["content"] == "for the new connection"
    if ended:
        await partner.stop(e_partner["chatUUID"], e_partner["senderUUID"])
        assert (await new.event_with(30))["chatUUID"] == e_old["chatUUID"]
    await old.send_json("/start", {"languageCode": "en"})
    assert (await old.event())["eventCode"] == 10
    await old.expect_nothing(0.3)
    await release()


async def test_a_30_still_on_its_way_goes_before_a_resumed_dialog(stomp, chat, monkeypatch):
    """The last dialog's 30 is late when the connection resumes another participant: it is read
    back before the resumed dialog's 10."""
    release = holding(monkeypatch, lambda n: n.message.get("code") == 30)
    x, q, dropped, other = await chat(), await chat(), await graced(stomp), await chat()
    e_x, e_q = await pair(x, q)
    e_dropped, _ = await pair(dropped, other)
    await q.send_json("/stop", body(e_q, None), receipt=True)
    await dropped.close()
    await x.send_json("/resume", {"resumeToken": e_dropped["serviceContent"]["resumeToken"]})
    first, second = await x.event(), await x.event()
    assert (first["eventCode"], first["chatUUID"]) == (30, e_x["chatUUID"])
    assert (second["eventCode"], second["chatUUID"]) == (10, e_dropped["chatUUID"])
    await release()
    await x.expect_nothing(0.3)


async def test_two_stops_in_one_websocket_message_are_answered_in_frame_order(chat):
    a, b = await chat(), await chat()
    ea, _ = await pair(a, b)
    stop = body(ea, None)
    await a.send_bytes(stomp_send("/stop", stop, "s1") + stomp_send("/stop", stop, "s2"))
    assert await frames_until(a, 4) == ["30", "RECEIPT s1", "31 dialog_ended", "RECEIPT s2"]


async def test_a_refusal_does_not_overtake_the_same_connections_earlier_message(chat):
    a, b = await chat(), await chat()
    ea, _ = await pair(a, b)
    frames = stomp_send("/message", body(ea, "m1"), "m1") + stomp_send("/message", body(ea, ""), "m2")
    await a.send_bytes(frames)
    assert await frames_until(a, 4) == ["20", "RECEIPT m1", "21 empty_content", "RECEIPT m2"]


async def test_a_message_after_the_own_stop_is_refused_after_the_30(chat):
    a, b = await chat(), await chat()
    ea, _ = await pair(a, b)
    frames = stomp_send("/stop", body(ea, None), "s") + stomp_send("/message", body(ea, "late"), "m")
    await a.send_bytes(frames)
    assert await frames_until(a, 4) == ["30", "RECEIPT s", "21 dialog_ended", "RECEIPT m"]


async def test_a_message_committed_before_an_admin_end_reaches_both_before_the_30(chat, monkeypatch):
    """The same race with the dialog ended from the admin (dialogs.maintenance.dialog_end_many)."""
    from dialogs.maintenance import dialog_end_many

    committed, gate = hold_after_commit(monkeypatch)
    a, b = await chat(), await chat()
    ea, _ = await pair(a, b)
    sending = asyncio.ensure_future(a.send_json("/message", body(ea, "first")))
    await asyncio.wait_for(committed.wait(), 5)
    ended = await database_sync_to_async(transaction.atomic(dialog_end_many))(dialog_ids=[ea["chatUUID"]])
    assert ended == [ea["chatUUID"]]
    await b.expect_nothing(0.3)  # b's 30 waits for the 20 before it
    gate.set()
    await sending
    for client in (a, b):
        first, last = await client.event(), await client.event()
        assert (first["eventCode"], first["content"]) == (20, "first")
        assert (last["eventCode"], last["senderUUID"], last["serviceContent"]) == (30, None, {"reason": "admin"})
        await client.expect_nothing(0.2)


async def test_an_event_whose_notice_was_lost_is_read_from_the_database(chat, monkeypatch, settings):
    """The partner's notice of a stored message is lost (its sender's process died, or Redis
    was down past the retries): the next event waits for it, and then it is read back."""
    from randomchat import consumers

    settings.RANDOMCHAT_ORDER_GAP_SECONDS = 0.5
    a, b = await chat(), await chat()
    ea, eb = await pair(a, b)
    send_notices = consumers.send_notices
    lose = {"first"}

    async def losing(layer, notices):
        await send_notices(layer, [n for n in notices if n.message.get("body", b"").find(b'"first"') < 0 or not lose])

    monkeypatch.setattr(consumers, "send_notices", losing)
    await a.send_json("/message", body(ea, "first"), receipt=True)
    assert (await a.event())["content"] == "first"
    await b.expect_nothing(0.2)  # its notice was lost
    lose.clear()
    await a.send_json("/message", body(ea, "second"), receipt=True)
    assert (await a.event())["content"] == "second"
    seen = [(await b.event(timeout=5))["content"] for _ in range(2)]
    assert seen == ["first", "second"]
    await b.send_json("/stop", body(eb, None), receipt=True)
    assert [(await client.event())["eventCode"] for client in (a, b)] == [30, 30]


def test_a_resumed_dialog_begins_at_the_first_event_owed():
    from chat.order import DialogOrder

    order = DialogOrder()
    assert order.begin(first_seq=4) == [] and order.last_sent == 3
    assert order.push(5, "e5") == [] and order.push(3, "old") == []  # early waits, a repeat is dropped
    assert order.push(4, "e4") == ["e4", "e5"] and order.last_sent == 5
