"""Lock order on PostgreSQL: services that race on the same rows must wait, never deadlock.

Each test holds a row lock from the test thread so that two services queue up behind it
in the order that used to deadlock, then lets them go. PostgreSQL aborts one side of a
deadlock (after deadlock_timeout) with an error; each service must instead complete.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection, connections, transaction

from dialogs.models import Dialog
from dialogs.pairing import user_leave
from chat.requests import DialogRequest
from dialogs.services import dialog_stop
from matching.models import PoolUser

from tests.support.factories import ALONE_OR_IN_A_BATCH, dialog_of, pool_user, this_process

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are a PostgreSQL matter; "
                       "SQLite runs one writer at a time"),
]
Status = PoolUser.Status


def waiting_on_locks() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def until_blocked(count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while waiting_on_locks() < count:
        assert time.monotonic() < deadline, f"expected {count} sessions waiting on a lock"
        time.sleep(0.02)


class Call(threading.Thread):
    """A service call in its own thread and database connection."""

    def __init__(self, service, **kwargs):
        super().__init__(daemon=True)
        self.service, self.kwargs = service, kwargs
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.service(**self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - asserted by the test
            self.error = exc
        finally:
            connection.close()

    def outcome(self):
        self.join(15)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)
        return self.result


def ordered_pair() -> tuple[PoolUser, PoolUser]:
    """Two users in one dialog, the first also first in primary-key and physical order."""
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    a = pool_user({}, id=low, channel_name="chan.claimed", status=Status.PAIRED)
    b = pool_user({}, id=high, channel_name="chan.claimant", status=Status.PAIRED)
    return a, b


def hold(*pks):
    """Lock rows from a second connection until the returned release() is called."""
    ready, release, done = threading.Event(), threading.Event(), threading.Event()

    def run():
        with transaction.atomic():
            list(PoolUser.objects.select_for_update().filter(pk__in=pks)) if pks[0] != "dialog" else list(
                Dialog.objects.select_for_update().filter(pk=pks[1])
            )
            ready.set()
            release.wait(15)
        connection.close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(10)

    def let_go():
        release.set()
        assert done.wait(10)

    return let_go


@ALONE_OR_IN_A_BATCH
def test_a_batch_skips_a_waiting_user_that_is_leaving(starter):
    # The leave holds the waiting user's row: the batch neither waits for it nor pairs it.
    leaving = pool_user({}, channel_name="chan.leaving", process=this_process())
    let_go = hold(leaving.pk)
    result = Call(starter, channel="chan.new")
    result.start()
    started = result.outcome()
    let_go()
    assert dialog_of(started.user_id) is None


@ALONE_OR_IN_A_BATCH
def test_a_batch_waits_for_the_batch_before_it_in_its_language_and_then_sees_its_users(starter):
    # The batch before it (another process) holds the language and has stored a waiting
    # user, not yet committed: the next batch must wait for it, then pair with that user.
    this_process()
    ready, release = threading.Event(), threading.Event()

    def earlier_batch():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext('randomchat.pool.en'))")
            earlier = pool_user({"languageCode": "en"}, channel_name="chan.earlier", process=this_process())
            ready.set()
            release.wait(15)
        connection.close()
        return earlier

    holder = Call(earlier_batch)
    holder.start()
    assert ready.wait(10)
    result = Call(starter, channel="chan.new")
    result.start()
    until_blocked(1)
    release.set()
    earlier = holder.outcome()
    assert dialog_of(result.outcome().user_id).first_id == earlier.pk


def test_dialog_is_stopped_while_the_partner_disconnects():
    a, b = ordered_pair()
    dialog = Dialog.objects.create(first=a, second=b, language="en")
    let_go = hold("dialog", dialog.pk)
    stop = Call(dialog_stop, request=DialogRequest(str(dialog.pk), str(a.pk), None), held_user=a.pk)
    stop.start()
    until_blocked(1)
    leave = Call(user_leave, channel_name="chan.claimant", reason="disconnect")  # b
    leave.start()
    until_blocked(2)
    let_go()
    stop.outcome()
    leave.outcome()
    dialog.refresh_from_db()
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == ("ended", "stop", a.pk)
    assert set(PoolUser.objects.values_list("status", flat=True)) == {Status.ENDED}


@ALONE_OR_IN_A_BATCH
def test_leave_while_a_batch_pairs_the_user_ends_the_new_dialog(starter):
    # The leave finds the user waiting, then finds it paired once the batch has committed:
    # it looks again, now with the dialog, and ends that dialog for the partner.
    waiting = pool_user({}, channel_name="chan.waiting", process=this_process())
    release, paired = threading.Event(), threading.Event()

    def pair_slowly():
        with transaction.atomic():
            starter("chan.new")
            paired.set()
            release.wait(15)
        connection.close()

    pairer = threading.Thread(target=pair_slowly, daemon=True)
    pairer.start()
    assert paired.wait(10)
    leave = Call(user_leave, channel_name="chan.waiting", reason="disconnect")
    leave.start()
    until_blocked(1)
    release.set()
    pairer.join(10)
    notices = leave.outcome()
    dialog = Dialog.objects.get()
    assert {n.message["chat"] for n in notices} == {str(dialog.pk)}
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == ("ended", "disconnect", waiting.pk)
    assert sorted(n.channel for n in notices) == ["chan.new", "chan.waiting"]
