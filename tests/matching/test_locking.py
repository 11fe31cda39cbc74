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
from chat.requests import DialogRequest
from dialogs.services import dialog_stop
from matching import services as pool
from matching.models import PoolUser

from tests.support.factories import pool_user

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
    """A claimed user and its claimant, written as pool_enter writes them.

    The claimed one comes first both in primary-key order and in the table's physical
    order, so that any row-by-row lock on the two takes it first.
    """
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    claimed = pool_user({}, id=low, channel_name="chan.claimed")
    claimant = pool_user({}, id=high, channel_name="chan.claimant")
    PoolUser.objects.filter(pk=claimed.pk).update(status=Status.CLAIMED, claimed_by=claimant)
    PoolUser.objects.filter(pk=claimant.pk).update(status=Status.PAIRING)
    return claimed, claimant


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


@pytest.mark.parametrize("leave", ["pair_release", "pool_leave", "pool_cancel"])
def test_claim_is_confirmed_while_the_claimant_gives_up(leave):
    claimed, claimant = ordered_pair()
    let_go = hold(claimed.pk)
    confirm = Call(pool.pair_confirm, claimed_id=claimed.pk, claimant_id=claimant.pk, channel_name="chan.claimed")
    confirm.start()
    until_blocked(1)
    if leave == "pair_release":
        other = Call(pool.pair_release, claimant_id=claimant.pk)
    elif leave == "pool_leave":
        other = Call(pool.pool_leave, channel_name="chan.claimant", reason="disconnect")
    else:
        other = Call(pool.pool_cancel, channel_name="chan.claimant")
    other.start()
    until_blocked(2)
    let_go()
    confirmed, _ = confirm.outcome(), other.outcome()
    # The confirmation came first: the pair is made, and the claimant's leave ends it or is moot.
    assert confirmed.dialog_id is not None
    assert Dialog.objects.count() == 1


def test_dialog_is_stopped_while_the_partner_disconnects():
    a, b = ordered_pair()
    PoolUser.objects.filter(pk__in=[a.pk, b.pk]).update(status=Status.PAIRED, claimed_by=None)
    dialog = Dialog.objects.create(first=a, second=b, language="en")
    let_go = hold("dialog", dialog.pk)
    stop = Call(dialog_stop, request=DialogRequest(str(dialog.pk), str(a.pk), None), held_user=a.pk)
    stop.start()
    until_blocked(1)
    leave = Call(pool.pool_leave, channel_name="chan.claimant", reason="disconnect")  # b
    leave.start()
    until_blocked(2)
    let_go()
    stop.outcome()
    leave.outcome()
    dialog.refresh_from_db()
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == ("ended", "stop", a.pk)
    assert set(PoolUser.objects.values_list("status", flat=True)) == {Status.ENDED}


def test_leave_while_the_claim_is_being_confirmed_ends_the_new_dialog():
    # pool_leave plans its locks for a claimed user, then finds it paired once it has the lock:
    # it must start over with the dialog's lock, and end that dialog for the partner.
    claimed, claimant = ordered_pair()
    release, confirmed = threading.Event(), threading.Event()

    def confirm_slowly():
        with transaction.atomic():
            pool.pair_confirm(claimed_id=claimed.pk, claimant_id=claimant.pk, channel_name="chan.claimed")
            confirmed.set()
            release.wait(15)
        connection.close()

    confirmer = threading.Thread(target=confirm_slowly, daemon=True)
    confirmer.start()
    assert confirmed.wait(10)
    leave = Call(pool.pool_leave, channel_name="chan.claimed", reason="disconnect")
    leave.start()
    until_blocked(1)
    release.set()
    confirmer.join(10)
    result = leave.outcome()
    dialog = Dialog.objects.get()
    assert result.dialog_id == dialog.pk
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == ("ended", "disconnect", claimed.pk)
    assert sorted(n.channel for n in result.notices) == ["chan.claimant", "chan.claimed"]
