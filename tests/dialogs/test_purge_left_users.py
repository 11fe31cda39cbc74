"""purge_dialogs also deletes the pool users who left the pool without a dialog: each
/start + /stop, or /start + disconnect, leaves a row with a name and attributes."""

import asyncio
import json
import time
from io import StringIO

import pytest
from django.core.management import call_command
from websockets.asyncio.client import connect

from matching.models import PoolUser
from moderation.models import ParticipantAddress
from tests.support.factories import ago, make_dialog, make_user
from tests.support.inprocess import raw_frame
from tests.support.live import DaphneServer

Status = PoolUser.Status


def purge(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("purge_dialogs", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def left(status, days: float, **fields) -> PoolUser:
    return make_user(status=status, name="Somebody", age=30, left_at=ago(days=days), **fields)


@pytest.mark.django_db
def test_users_who_left_before_the_retention_are_deleted():
    cancelled_old, gone_old = left(Status.CANCELLED, 40), left(Status.GONE, 40)
    before_left_at = make_user(status=Status.CANCELLED, created_at=ago(days=40))  # left_at unknown
    kept = [
        left(Status.CANCELLED, 1),
        left(Status.GONE, 1),
        make_user(status=Status.CANCELLED, created_at=ago(days=1)),
        make_user(status=Status.WAITING, created_at=ago(days=40)),  # still held by its connection
    ]
    # Left long ago, but a dialog that is kept names it.
    referenced = left(Status.GONE, 40)
    make_dialog(referenced, make_user(status=Status.ENDED), ended_at=ago(days=1))
    # Every user's hashed address was stored as it entered the pool: it goes with the user.
    for user in [cancelled_old, gone_old, *kept, referenced]:
        ParticipantAddress.objects.create(user=user, address_hash="a" * 64)

    out, err = purge("--older-than", "30", "--dry-run")
    assert out.splitlines()[1] == "Would delete 3 pool user(s) who left the pool without a dialog."
    assert PoolUser.objects.filter(pk=cancelled_old.pk).exists()

    out, err = purge("--older-than", "30")
    assert out == (
        "Deleted 0 dialog(s), 0 message(s) and 0 pool user(s) that only they referenced.\n"
        "Deleted 3 pool user(s) who left the pool without a dialog.\n"
    )
    assert err == ""
    gone = {cancelled_old.pk, gone_old.pk, before_left_at.pk}
    assert not PoolUser.objects.filter(pk__in=gone).exists()
    assert PoolUser.objects.filter(pk__in=[u.pk for u in kept] + [referenced.pk]).count() == 5
    assert not ParticipantAddress.objects.filter(user__in=gone).exists()
    assert ParticipantAddress.objects.count() == 5


@pytest.mark.django_db
def test_a_user_freed_by_a_purged_dialog_goes_in_the_same_run():
    referenced = left(Status.GONE, 40)
    make_dialog(referenced, make_user(status=Status.ENDED), ended_at=ago(days=40))
    out, _ = purge("--older-than", "30")
    # The dialog's participants only it referenced (the gone user among them).
    assert out.startswith("Deleted 1 dialog(s), 0 message(s) and 2 pool user(s)")
    assert not PoolUser.objects.exists()


@pytest.mark.django_db
def test_left_users_are_purged_in_batches_with_progress():
    for _ in range(5):
        left(Status.CANCELLED, 40)
    out, err = purge("--older-than", "30", "--batch-size", "2")
    assert out.splitlines()[1] == "Deleted 5 pool user(s) who left the pool without a dialog."
    assert err == "purged 2/5 pool users\npurged 4/5 pool users\npurged 5/5 pool users\n"


async def start_then(url: str, leave: str) -> None:
    async with connect(url, subprotocols=["v12.stomp"]) as ws:
        await ws.send("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
        assert (await asyncio.wait_for(ws.recv(), 10)).startswith("CONNECTED")
        body = json.dumps({"name": "Bob", "languageCode": "zz", "userAttributes": {"gender": "male", "age": 33}})
        await ws.send(raw_frame("SEND", [("destination", "/start"), ("receipt", "s")], body).decode())
        assert (await asyncio.wait_for(ws.recv(), 10)).startswith("RECEIPT")
        if leave == "stop":
            await ws.send(raw_frame("SEND", [("destination", "/stop"), ("receipt", "x")], "{}").decode())
            assert (await asyncio.wait_for(ws.recv(), 10)).startswith("RECEIPT")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_a_live_start_then_stop_or_disconnect_leaves_nothing_after_the_purge():
    left_users = PoolUser.objects.filter(name="Bob", age=33)
    with DaphneServer() as server:
        asyncio.run(start_then(server.ws_url, "stop"))
        asyncio.run(start_then(server.ws_url, "disconnect"))
        deadline = time.monotonic() + 10  # the server handles the close after the client is gone
        while left_users.filter(status=Status.WAITING).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(left_users.values_list("status", flat=True)) == [Status.CANCELLED, Status.GONE]
    assert purge("--older-than", "1")[0].count("\n") == 1  # nothing left a day ago
    out, _ = purge("--older-than", "0")
    assert out.splitlines()[1] == "Deleted 2 pool user(s) who left the pool without a dialog."
    assert not left_users.exists()
