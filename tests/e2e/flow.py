"""The seed's whole chat flow, written once and run with every real client.

Each step asserts on what both clients received and on the rows the server stored.
The database is read from the test process (sync ORM: call these from sync tests).
"""

from __future__ import annotations

import uuid

from dialogs.models import Dialog, Message
from matching.models import PoolUser

from .clients import Event, RecordingClient

# The seed's /start bodies.
BOB = {
    "name": "Bob",
    "languageCode": "ru",
    "userAttributes": {"gender": "male", "age": None},
    "targetAttributes": {"gender": "female", "age": None},
}
ALICE = {
    "name": "Alice",
    "languageCode": "ru",
    "userAttributes": {"gender": "female", "age": None},
    "targetAttributes": {"gender": "male", "age": None},
}

BOB_SAYS = "Привет, Алиса! Как дела? 👋"
ALICE_SAYS = "Hi Bob – ça va? 日本語も大丈夫 ✓"


def partner_info(start_body: dict) -> dict:
    return {
        "name": start_body["name"],
        "languageCode": start_body["languageCode"],
        "userAttributes": start_body["userAttributes"],
    }


def assert_event_headers(event: Event) -> None:
    headers = event.headers
    assert headers["destination"] == "/user/dialog"
    assert headers["content-type"] == "application/json"
    assert headers["subscription"]
    assert headers["message-id"]


def assert_paired(event: Event, *, partner: dict) -> None:
    assert_event_headers(event)
    assert event.code == 10, event.body
    assert event.body["content"] is None
    assert event.body["serviceContent"] == {"partner": partner_info(partner)}
    uuid.UUID(event.chat)
    uuid.UUID(event.sender)


def start_pair(bob: RecordingClient, alice: RecordingClient, tag: str = "1") -> tuple[Event, Event]:
    """Bob waits first (RECEIPT = stored in the pool), then Alice arrives and both are paired."""
    bob.publish("/start", BOB, receipt=f"bob-start-{tag}")
    bob.wait_receipt(f"bob-start-{tag}")
    waiting = PoolUser.objects.filter(name="Bob", status=PoolUser.Status.WAITING)
    assert waiting.count() == 1, list(PoolUser.objects.values("name", "status"))
    bob_waiting_id = str(waiting.get().pk)
    bob.assert_no_event(within=0.2)

    alice.publish("/start", ALICE)
    bob_paired = bob.next_event()
    alice_paired = alice.next_event()
    assert_paired(bob_paired, partner=ALICE)
    assert_paired(alice_paired, partner=BOB)
    assert bob_paired.chat == alice_paired.chat
    assert bob_paired.sender != alice_paired.sender
    # Bob's senderUUID is the user the pool stored for him: final, never changed by pairing.
    assert bob_paired.sender == bob_waiting_id

    dialog = Dialog.objects.get(pk=bob_paired.chat)
    assert dialog.status == Dialog.Status.ACTIVE
    assert (str(dialog.first_id), str(dialog.second_id)) == (bob_paired.sender, alice_paired.sender)
    assert dialog.language == "ru"
    assert dialog.ended_at is None and dialog.end_reason is None
    for event, body in ((bob_paired, BOB), (alice_paired, ALICE)):
        user = PoolUser.objects.get(pk=event.sender)
        assert user.status == PoolUser.Status.PAIRED
        assert (user.name, user.language, user.gender, user.age) == (
            body["name"],
            body["languageCode"],
            body["userAttributes"]["gender"],
            None,
        )
        assert user.target_gender == body["targetAttributes"]["gender"]
    return bob_paired, alice_paired


def say(author: RecordingClient, author_event: Event, others: list[RecordingClient], text: str) -> None:
    """`author` sends `text`; the author and every other client get event 20 with it."""
    author.publish(
        "/message", {"chatUUID": author_event.chat, "senderUUID": author_event.sender, "content": text}
    )
    for client in [author, *others]:
        event = client.next_event()
        assert_event_headers(event)
        assert event.body == {
            "chatUUID": author_event.chat,
            "senderUUID": author_event.sender,
            "eventCode": 20,
            "serviceContent": None,
            "content": text,
        }, f"{client.name} got {event.body}"


def assert_left(event: Event, *, chat: str, leaver: str, reason: str) -> None:
    assert_event_headers(event)
    assert event.body == {
        "chatUUID": chat,
        "senderUUID": leaver,
        "eventCode": 30,
        "serviceContent": {"reason": reason},
        "content": None,
    }


def assert_dialog_ended(chat: str, *, reason: str, ended_by: str) -> Dialog:
    dialog = Dialog.objects.get(pk=chat)
    assert dialog.status == Dialog.Status.ENDED
    assert dialog.end_reason == reason
    assert str(dialog.ended_by_id) == ended_by
    assert dialog.ended_at is not None and dialog.ended_at >= dialog.started_at
    return dialog


def run_seed_flow(bob: RecordingClient, alice: RecordingClient) -> None:
    """connect, subscribe, /start x2, messages both ways, impersonation, /stop, /start again, DISCONNECT."""
    bob_paired, alice_paired = start_pair(bob, alice, "1")
    chat, bob_id, alice_id = bob_paired.chat, bob_paired.sender, alice_paired.sender

    say(bob, bob_paired, [alice], BOB_SAYS)
    say(alice, alice_paired, [bob], ALICE_SAYS)
    assert list(Dialog.objects.get(pk=chat).messages.values_list("author_id", "content")) == [
        (uuid.UUID(bob_id), BOB_SAYS),
        (uuid.UUID(alice_id), ALICE_SAYS),
    ]

    # Alice knows Bob's senderUUID (it came with every message of his), yet cannot speak as him.
    alice.publish("/message", {"chatUUID": chat, "senderUUID": bob_id, "content": "I am Bob, trust me"})
    refused = alice.next_event()
    assert refused.code == 21
    assert (refused.chat, refused.sender, refused.body["content"]) == (chat, bob_id, None)
    assert refused.body["serviceContent"]["error"] == "not_participant"
    assert refused.body["serviceContent"]["detail"]
    assert Message.objects.filter(dialog_id=chat).count() == 2

    # Bob ends the dialog; both hear it, and Bob heard nothing of the forged message before.
    bob.publish("/stop", {"chatUUID": chat, "senderUUID": bob_id, "content": None})
    assert_left(bob.next_event(), chat=chat, leaver=bob_id, reason="stop")
    assert_left(alice.next_event(), chat=chat, leaver=bob_id, reason="stop")
    assert_dialog_ended(chat, reason="stop", ended_by=bob_id)
    assert set(PoolUser.objects.filter(pk__in=[bob_id, alice_id]).values_list("status", flat=True)) == {
        PoolUser.Status.ENDED
    }

    # The ended dialog takes no more messages.
    alice.publish("/message", {"chatUUID": chat, "senderUUID": alice_id, "content": "still there?"})
    late = alice.next_event()
    assert late.code == 21 and late.body["serviceContent"]["error"] == "dialog_ended", late.body

    # /start again: new users with new senderUUIDs, in a new dialog.
    bob_again, alice_again = start_pair(bob, alice, "2")
    assert bob_again.chat != chat
    assert {bob_again.sender, alice_again.sender}.isdisjoint({bob_id, alice_id})
    assert PoolUser.objects.filter(name="Bob").count() == 2
    assert PoolUser.objects.filter(name="Alice").count() == 2
    say(alice, alice_again, [bob], "second round")

    # Bob leaves with DISCONNECT: Alice hears reason "disconnect", the dialog row says so.
    bob.disconnect()
    assert_left(alice.next_event(), chat=bob_again.chat, leaver=bob_again.sender, reason="disconnect")
    assert_dialog_ended(bob_again.chat, reason="disconnect", ended_by=bob_again.sender)
    assert Dialog.objects.count() == 2
    assert Message.objects.count() == 3


def run_drop_flow(bob: RecordingClient, alice: RecordingClient) -> None:
    """The socket closing without DISCONNECT ends the dialog just the same."""
    bob_paired, _ = start_pair(bob, alice, "drop")
    bob.drop()
    assert_left(alice.next_event(), chat=bob_paired.chat, leaver=bob_paired.sender, reason="disconnect")
    assert_dialog_ended(bob_paired.chat, reason="disconnect", ended_by=bob_paired.sender)
