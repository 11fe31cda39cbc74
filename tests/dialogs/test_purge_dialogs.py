from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from dialogs.models import Dialog, Message
from matching.models import PoolUser

from tests.support.factories import ago, make_dialog, make_user

Status = PoolUser.Status

pytestmark = pytest.mark.django_db


def purge(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("purge_dialogs", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def world():
    old = make_dialog(ended_at=ago(days=40), started_at=ago(days=41), messages=3)
    recent = make_dialog(ended_at=ago(days=1), messages=2)
    # Started long ago but still going: never purged, however old.
    active = make_dialog(started_at=ago(days=100), messages=1)
    # A user once claimed by a purged participant only loses that (SET_NULL) reference.
    claimed_once = make_user(status=Status.GONE, claimed_by=old.first)
    return old, recent, active, claimed_once


def test_purge_dialogs__deletes_old_ended_dialogs_their_messages_and_participants():
    old, recent, active, claimed_once = world()

    out, err = purge("--older-than", "30")

    assert out == "Deleted 1 dialog(s), 3 message(s) and 2 pool user(s) that only they referenced.\n"
    assert err == ""
    assert set(Dialog.objects.values_list("pk", flat=True)) == {recent.pk, active.pk}
    assert Message.objects.filter(dialog_id=old.pk).count() == 0
    assert Message.objects.count() == 3
    assert not PoolUser.objects.filter(pk__in=[old.first_id, old.second_id]).exists()
    for dialog in (recent, active):
        assert PoolUser.objects.filter(pk__in=[dialog.first_id, dialog.second_id]).count() == 2
    claimed_once.refresh_from_db()
    assert claimed_once.claimed_by_id is None


def test_purge_dialogs__dry_run_changes_nothing():
    old, recent, active, claimed_once = world()
    users_before = PoolUser.objects.count()

    out, _ = purge("--older-than", "30", "--dry-run")

    assert out == "Would delete 1 dialog(s), 3 message(s) and 2 pool user(s) that only they referenced.\n"
    assert Dialog.objects.count() == 3
    assert Message.objects.count() == 6
    assert PoolUser.objects.count() == users_before
    assert PoolUser.objects.get(pk=claimed_once.pk).claimed_by_id == old.first_id


def test_purge_dialogs__older_than_is_measured_from_the_end():
    make_dialog(ended_at=ago(days=2), started_at=ago(days=90))
    assert purge("--older-than", "3")[0].startswith("Deleted 0 dialog(s)")
    assert purge("--older-than", "1.5")[0].startswith("Deleted 1 dialog(s)")


def test_purge_dialogs__keeps_participants_something_else_still_references():
    old = make_dialog(ended_at=ago(days=40))
    # Artificial, but purge must not trust that a user is in one dialog only.
    make_dialog(old.first, make_user(status=Status.ENDED), ended_at=ago(days=1))
    # A participant some connection still holds is never deleted.
    held = make_user(status=Status.PAIRED)
    make_dialog(held, make_user(status=Status.ENDED), ended_at=ago(days=40))

    out, _ = purge("--older-than", "30", "--dry-run")
    assert out.startswith("Would delete 2 dialog(s), 0 message(s) and 2 pool user(s)")
    out, _ = purge("--older-than", "30")
    assert out.startswith("Deleted 2 dialog(s), 0 message(s) and 2 pool user(s)")
    assert PoolUser.objects.filter(pk=old.first_id).exists()
    assert not PoolUser.objects.filter(pk=old.second_id).exists()
    assert PoolUser.objects.filter(pk=held.pk).exists()


def test_purge_dialogs__batches_with_progress_on_stderr():
    for _ in range(5):
        make_dialog(ended_at=ago(days=40), messages=1)

    out, err = purge("--older-than", "30", "--batch-size", "2")

    assert err == "purged 2/5 dialogs\npurged 4/5 dialogs\npurged 5/5 dialogs\n"
    assert out == "Deleted 5 dialog(s), 5 message(s) and 10 pool user(s) that only they referenced.\n"
    assert Dialog.objects.count() == Message.objects.count() == PoolUser.objects.count() == 0


def test_purge_dialogs__no_progress_for_one_batch_or_at_verbosity_0():
    for _ in range(3):
        make_dialog(ended_at=ago(days=40))
    assert purge("--older-than", "30", "--batch-size", "3")[1] == ""
    for _ in range(3):
        make_dialog(ended_at=ago(days=40))
    assert purge("--older-than", "30", "--batch-size", "2", "--verbosity", "0") == ("", "")
    assert Dialog.objects.count() == 0


def test_purge_dialogs__default_batch_is_1000():
    users = PoolUser.objects.bulk_create(
        PoolUser(channel_name=f"bulk.{i}", language="en", status=Status.ENDED) for i in range(2002)
    )
    ended = ago(days=40)
    Dialog.objects.bulk_create(
        Dialog(
            first=users[2 * i],
            second=users[2 * i + 1],
            language="en",
            status=Dialog.Status.ENDED,
            ended_at=ended,
            end_reason=Dialog.EndReason.STOP,
        )
        for i in range(1001)
    )

    out, err = purge("--older-than", "30")

    assert err == "purged 1000/1001 dialogs\npurged 1001/1001 dialogs\n"
    assert out.startswith("Deleted 1001 dialog(s), 0 message(s) and 2002 pool user(s)")
    assert Dialog.objects.count() == PoolUser.objects.count() == 0


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--older-than", "-1"],
        ["--older-than", "nan"],
        ["--older-than", "a week"],
        ["--older-than", "1e12"],
        ["--older-than", "30", "--batch-size", "0"],
        ["--older-than", "30", "--batch-size", "-5"],
    ],
)
def test_purge_dialogs__bad_input_is_a_command_error(args):
    make_dialog(ended_at=ago(days=40))
    with pytest.raises(CommandError):
        purge(*args)
    assert Dialog.objects.count() == 1
