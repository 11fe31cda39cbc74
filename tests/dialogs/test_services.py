"""dialogs.services: messages, /stop and the end of a dialog, on the real database."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import override_settings

from dialogs.models import Dialog, Message
from chat import events
from chat.refusals import Refusal
from chat.requests import DialogRequest, message_draft, parse_dialog_request
from dialogs.services import dialog_end, dialog_stop, messages_store
from dialogs.pairing import user_leave
from matching import services as pool
from matching.models import PoolUser
from tests.support.factories import pair, start

pytestmark = pytest.mark.django_db
Status = PoolUser.Status


@pytest.fixture
def dialog():
    return pair()


def req(chat, sender, content=None) -> DialogRequest:
    return DialogRequest(chat=None if chat is None else str(chat), sender=None if sender is None else str(sender),
                         content=content)


def snapshot():
    return (
        list(Dialog.objects.order_by("pk").values_list("pk", "status", "ended_at", "end_reason", "ended_by")),
        list(PoolUser.objects.order_by("pk").values_list("pk", "status", "left_at")),
        list(Message.objects.order_by("pk").values_list("pk", "dialog", "author", "content")),
    )


def refused(service, request, held_user) -> Refusal:
    before = snapshot()
    with pytest.raises(Refusal) as caught:
        service(request=request, held_user=held_user)
    assert snapshot() == before  # a refusal changes nothing
    assert caught.value.detail
    return caught.value


def body_of(notice: events.Notice) -> dict:
    return json.loads(notice.message["body"])


def message_create(*, request: DialogRequest, held_user) -> list[events.Notice]:
    """One /message as the consumer stores it: checked, then written as a batch of one."""
    [result] = messages_store([message_draft(request, held_user)])
    if isinstance(result, Refusal):
        raise result
    return result


# parse_dialog_request


def test_parse_dialog_request__keeps_ids_as_sent():
    r = parse_dialog_request(b'{"chatUUID": "not-a-uuid", "senderUUID": "X", "content": "hi"}')
    assert r == DialogRequest(chat="not-a-uuid", sender="X", content="hi")
    assert parse_dialog_request(b"{}") == DialogRequest(chat=None, sender=None, content=None)


@pytest.mark.parametrize("raw", [b"", b"nope", b"[1]", b'"x"', b"\xc3\x28", b"[" * 70_000])
def test_parse_dialog_request__invalid_json(raw):
    with pytest.raises(Refusal) as caught:
        parse_dialog_request(raw)
    assert caught.value.slug == "invalid_json"


# message_create


def test_message_create__stores_and_notifies_both(dialog):
    a, b, d = dialog
    notices = message_create(request=req(d.pk, a, "hello"), held_user=a)
    stored = Message.objects.get()
    assert (stored.dialog_id, stored.author_id, stored.content) == (d.pk, a, "hello")
    assert stored.created_at is not None
    assert [n.channel for n in notices] == ["chan.a", "chan.b"]
    notice = notices[0]
    assert notices[1].message is notice.message
    assert notice.message["chat"] == str(d.pk) and notice.message["code"] == 20
    assert body_of(notice) == {"chatUUID": str(d.pk), "senderUUID": str(a), "eventCode": 20,
                               "serviceContent": None, "content": "hello"}
    message_create(request=req(d.pk, b, "hi"), held_user=b)
    assert list(d.messages.values_list("author", "content")) == [(a, "hello"), (b, "hi")]


def test_message_create__accepts_ids_in_any_uuid_spelling(dialog):
    a, _, d = dialog
    message_create(request=req(str(d.pk).upper(), a.hex, "x"), held_user=a)
    assert Message.objects.count() == 1


@pytest.mark.parametrize("length", [1, 4095, 4096])
def test_message_create__content_up_to_the_limit(dialog, length):
    a, _, d = dialog
    message_create(request=req(d.pk, a, "é" * length), held_user=a)
    assert Message.objects.get().content == "é" * length


def test_message_create__content_too_long(dialog):
    a, _, d = dialog
    r = refused(message_create, req(d.pk, a, "x" * 4097), a)
    assert (r.slug, r.field) == ("content_too_long", "content")


@override_settings(RANDOMCHAT_MAX_CONTENT_LENGTH=10)
def test_message_create__limit_is_configurable(dialog):
    a, _, d = dialog
    message_create(request=req(d.pk, a, "x" * 10), held_user=a)
    assert refused(message_create, req(d.pk, a, "x" * 11), a).slug == "content_too_long"


def test_message_create__empty_content(dialog):
    a, _, d = dialog
    r = refused(message_create, req(d.pk, a, ""), a)
    assert (r.slug, r.field) == ("empty_content", "content")


@pytest.mark.parametrize("content", [None, 5, True, ["hi"], {"text": "hi"}])
def test_message_create__content_not_a_string(dialog, content):
    a, _, d = dialog
    r = refused(message_create, req(d.pk, a, content), a)
    assert (r.slug, r.field) == ("invalid_field", "content")


@pytest.mark.parametrize("content", ["a\x00b", "\ud800", "ok \udfff"])
def test_message_create__content_that_cannot_be_stored(dialog, content):
    # NUL cannot be stored in PostgreSQL text, a lone surrogate in no UTF-8 database: both
    # must be refused, not crash the service (and with it the connection's consumer).
    a, _, d = dialog
    r = refused(message_create, req(d.pk, a, content), a)
    assert (r.slug, r.field) == ("invalid_field", "content")


def test_message_create__control_characters_and_emoji_are_content(dialog):
    a, _, d = dialog
    message_create(request=req(d.pk, a, "line\nline\ttab 😀"), held_user=a)
    assert Message.objects.get().content == "line\nline\ttab 😀"


@pytest.mark.parametrize(
    ("chat", "sender", "field"),
    [
        ("not-a-uuid", "ok", "chatUUID"),
        (None, "ok", "chatUUID"),
        ("ok", None, "senderUUID"),
        ("ok", "not-a-uuid", "senderUUID"),
        ("ok", "", "senderUUID"),
    ],
)
def test_message_create__invalid_ids(dialog, chat, sender, field):
    a, _, d = dialog
    chat = str(d.pk) if chat == "ok" else chat
    sender = str(a) if sender == "ok" else sender
    r = refused(message_create, DialogRequest(chat=chat, sender=sender, content="hi"), a)
    assert (r.slug, r.field) == ("invalid_field", field)


def test_message_create__unknown_chat(dialog):
    a, _, _ = dialog
    r = refused(message_create, req(uuid.uuid4(), a, "hi"), a)
    assert (r.slug, r.field) == ("unknown_chat", "chatUUID")


def test_message_create__not_participant__partners_sender_uuid(dialog):
    a, b, d = dialog
    r = refused(message_create, req(d.pk, b, "I am b"), a)  # a's connection speaks as b
    assert (r.slug, r.field) == ("not_participant", "senderUUID")


def test_message_create__not_participant__user_of_another_connection(dialog):
    a, b, d = dialog
    _, _, other = pair("chan.c", "chan.d")
    c = other.first_id
    r = refused(message_create, req(d.pk, c, "hi"), c)  # c's own id, but not in this dialog
    assert r.slug == "not_participant"
    r = refused(message_create, req(d.pk, a, "hi"), c)  # a's id, from c's connection
    assert r.slug == "not_participant"
    assert refused(message_create, req(d.pk, a, "hi"), None).slug == "not_participant"  # a connection with no user


def test_message_create__dialog_ended(dialog):
    a, b, d = dialog
    dialog_stop(request=req(d.pk, b), held_user=b)
    r = refused(message_create, req(d.pk, a, "hi"), a)
    assert r.slug == "dialog_ended"
    assert not Message.objects.exists()


def test_message_create__old_user_of_the_connection_cannot_speak(dialog):
    a, b, d = dialog
    user_leave(channel_name="chan.b", reason="disconnect")
    new_a = start("chan.a").user_id
    # The connection now holds new_a: its former senderUUID no longer speaks for it.
    assert refused(message_create, req(d.pk, a, "hi"), new_a).slug == "not_participant"


def test_messages_store__one_transaction_for_many_dialogs_each_draft_its_own_result(dialog):
    a, b, d = dialog
    c, e, other = pair("chan.c", "chan.e")
    dialog_stop(request=req(other.pk, e), held_user=e)
    drafts = [
        message_draft(req(d.pk, a, "one"), a),
        message_draft(req(d.pk, b, "I am a"), a),  # not b's connection
        message_draft(req(other.pk, c, "late"), c),  # that dialog has ended
        message_draft(req(uuid.uuid4(), a, "where"), a),
        message_draft(req(d.pk, b, "two"), b),
    ]
    results = messages_store(drafts)
    assert [r.slug if isinstance(r, Refusal) else body_of(r[0])["content"] for r in results] == [
        "one", "not_participant", "dialog_ended", "unknown_chat", "two"
    ]
    assert list(Message.objects.order_by("created_at", "id").values_list("author", "content")) == [
        (a, "one"), (b, "two")
    ]


# dialog_stop


def test_dialog_stop__ends_the_dialog_for_both(dialog):
    a, b, d = dialog
    notices = dialog_stop(request=req(d.pk, a), held_user=a)
    assert [n.channel for n in notices] == ["chan.a", "chan.b"]
    notice = notices[0]
    d.refresh_from_db()
    assert (d.status, d.end_reason, d.ended_by_id) == (Dialog.Status.ENDED, "stop", a)
    assert d.ended_at is not None and d.ended_at >= d.started_at
    assert PoolUser.objects.get(pk=a).status == PoolUser.objects.get(pk=b).status == Status.ENDED
    assert body_of(notice) == {"chatUUID": str(d.pk), "senderUUID": str(a), "eventCode": 30,
                               "serviceContent": {"reason": "stop"}, "content": None}


def test_dialog_stop__twice(dialog):
    a, b, d = dialog
    dialog_stop(request=req(d.pk, a), held_user=a)
    assert refused(dialog_stop, req(d.pk, a), a).slug == "dialog_ended"
    assert refused(dialog_stop, req(d.pk, b), b).slug == "dialog_ended"


def test_dialog_stop__refusals(dialog):
    a, b, d = dialog
    assert refused(dialog_stop, req(uuid.uuid4(), a), a).slug == "unknown_chat"
    assert refused(dialog_stop, req(d.pk, b), a).slug == "not_participant"
    assert refused(dialog_stop, req(d.pk, a), None).slug == "not_participant"
    r = refused(dialog_stop, DialogRequest(chat="x", sender=str(a), content=None), a)
    assert (r.slug, r.field) == ("invalid_field", "chatUUID")
    r = refused(dialog_stop, DialogRequest(chat=str(d.pk), sender=None, content=None), a)
    assert (r.slug, r.field) == ("invalid_field", "senderUUID")


def test_dialog_stop__not_in_dialog():
    assert refused(dialog_stop, DialogRequest(None, None, None), None).slug == "not_in_dialog"
    waiting = start("chan.w").user_id
    pool.pool_cancel(channel_name="chan.w")
    assert refused(dialog_stop, DialogRequest(None, None, None), waiting).slug == "not_in_dialog"


def test_dialog_stop__without_chat_uuid_while_in_a_dialog(dialog):
    # The connection is in a dialog: "not_in_dialog" would be false; the body lacks its chatUUID.
    a, _, d = dialog
    r = refused(dialog_stop, DialogRequest(chat=None, sender=str(a), content=None), a)
    assert (r.slug, r.field) == ("invalid_field", "chatUUID")


# dialog_end


@pytest.mark.parametrize("reason", ["timeout", "admin", "disconnect"])
def test_dialog_end__records_how_and_who(dialog, reason):
    a, b, d = dialog
    notice, _ = dialog_end(dialog_id=d.pk, reason=reason)
    d.refresh_from_db()
    assert (d.status, d.end_reason, d.ended_by_id) == (Dialog.Status.ENDED, reason, None)
    assert body_of(notice)["serviceContent"] == {"reason": reason} and body_of(notice)["senderUUID"] is None


def test_dialog_end__is_idempotent(dialog):
    a, b, d = dialog
    dialog_end(dialog_id=d.pk, ended_by=a, reason="admin")
    before = snapshot()
    assert dialog_end(dialog_id=d.pk, ended_by=b, reason="timeout") == []
    assert dialog_end(dialog_id=uuid.uuid4(), reason="timeout") == []
    assert snapshot() == before
