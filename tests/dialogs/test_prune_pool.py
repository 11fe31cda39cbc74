import subprocess
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from dialogs.models import Dialog
from matching.models import PoolUser, ServerProcess
from matching.processes import HOSTNAME

from tests.support.events import LEFT, event_body
from tests.support.factories import (
    ago,
    assert_nothing_on,
    live_process,
    make_dialog,
    make_user,
    new_channel,
    receive_event,
)

Status = PoolUser.Status


def prune(*args) -> str:
    out = StringIO()
    call_command("prune_pool", *args, stdout=out)
    return out.getvalue()


def finished_pid() -> int:
    """A pid on this host that no longer runs."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def dead_process_world(dead: ServerProcess):
    """On the dead process: a long-waiting user and one side of a dialog whose other side is alive."""
    alive = live_process()
    waiting = make_user(process=dead, channel=new_channel(), created_at=ago(600))
    leaver = make_user(process=dead, status=Status.PAIRED, channel=new_channel())
    partner = make_user(process=alive, status=Status.PAIRED, channel=new_channel())
    dialog = make_dialog(leaver, partner)
    return alive, waiting, leaver, partner, dialog


@pytest.mark.parametrize("how", ["stale heartbeat", "pid gone on this host"])
@pytest.mark.django_db(transaction=True)
def test_prune_pool__releases_what_a_dead_process_held(how):
    if how == "stale heartbeat":
        dead = ServerProcess.objects.create(hostname="elsewhere", pid=1, last_seen=ago(3600))
    else:
        dead = ServerProcess.objects.create(hostname=HOSTNAME, pid=finished_pid())
    alive, waiting, leaver, partner, dialog = dead_process_world(dead)

    out = prune()

    assert out == "Released 1 dead server process(es): 1 user(s) left the pool, 1 dialog(s) ended.\n"
    waiting.refresh_from_db()
    assert waiting.status == Status.GONE and waiting.left_at is not None
    dialog.refresh_from_db()
    assert dialog.status == Dialog.Status.ENDED
    assert dialog.end_reason == Dialog.EndReason.DISCONNECT
    assert dialog.ended_by_id == leaver.pk
    partner.refresh_from_db()
    assert partner.status == Status.ENDED
    assert not ServerProcess.objects.filter(pk=dead.pk).exists()
    assert ServerProcess.objects.filter(pk=alive.pk).exists()
    assert receive_event(partner.channel_name) == event_body(
        LEFT, chat=str(dialog.pk), sender=str(leaver.pk), service={"reason": "disconnect"}
    )


@pytest.mark.django_db(transaction=True)
def test_prune_pool__dry_run_changes_nothing():
    dead = ServerProcess.objects.create(hostname="elsewhere", pid=1, last_seen=ago(3600))
    alive, waiting, leaver, partner, dialog = dead_process_world(dead)
    overdue = make_user(process=alive, created_at=ago(600), channel=new_channel())

    out = prune("--dry-run", "--max-wait", "60")

    assert out == (
        "Would release 1 dead server process(es): 1 user(s) left the pool, 1 dialog(s) ended.\n"
        "Would remove 1 waiting user(s) who waited longer than 60s.\n"
    )
    assert ServerProcess.objects.filter(pk=dead.pk).exists()
    assert Dialog.objects.get(pk=dialog.pk).status == Dialog.Status.ACTIVE
    expected = {waiting: Status.WAITING, leaver: Status.PAIRED, partner: Status.PAIRED, overdue: Status.WAITING}
    for user, status in expected.items():
        assert PoolUser.objects.get(pk=user.pk).status == status
    assert_nothing_on(partner.channel_name)
    assert_nothing_on(overdue.channel_name)


@pytest.mark.django_db(transaction=True)
def test_prune_pool__max_wait_removes_and_tells_those_who_waited_too_long():
    alive = live_process()
    overdue = make_user(process=alive, created_at=ago(120), channel=new_channel())
    patient = make_user(process=alive, created_at=ago(5), channel=new_channel())
    old_pair = make_dialog(
        make_user(status=Status.PAIRED, created_at=ago(7200), process=alive),
        make_user(status=Status.PAIRED, created_at=ago(7200), process=alive),
    )
    claimed = make_user(status=Status.CLAIMED, created_at=ago(7200), process=alive)

    out = prune("--max-wait", "60")

    assert out == (
        "Released 0 dead server process(es): 0 user(s) left the pool, 0 dialog(s) ended.\n"
        "Removed 1 waiting user(s) who waited longer than 60s.\n"
    )
    overdue.refresh_from_db()
    assert overdue.status == Status.CANCELLED and overdue.left_at is not None
    assert receive_event(overdue.channel_name) == event_body(LEFT, service={"reason": "timeout"})
    assert PoolUser.objects.get(pk=patient.pk).status == Status.WAITING
    assert_nothing_on(patient.channel_name)
    # Only waiting users time out: a dialog or a pairing in progress is left alone.
    assert Dialog.objects.get(pk=old_pair.pk).status == Dialog.Status.ACTIVE
    assert PoolUser.objects.get(pk=claimed.pk).status == Status.CLAIMED


@pytest.mark.django_db(transaction=True)
def test_prune_pool__a_user_on_a_dead_process_is_gone_not_timed_out():
    dead = ServerProcess.objects.create(hostname="elsewhere", pid=1, last_seen=ago(3600))
    user = make_user(process=dead, created_at=ago(600), channel=new_channel())

    out = prune("--max-wait", "60")

    assert "1 user(s) left the pool" in out
    assert "Removed 0 waiting user(s)" in out
    assert PoolUser.objects.get(pk=user.pk).status == Status.GONE
    assert_nothing_on(user.channel_name)


@pytest.mark.django_db
def test_prune_pool__without_max_wait_long_waits_are_kept():
    user = make_user(process=live_process(), created_at=ago(86400))
    assert prune() == "Released 0 dead server process(es): 0 user(s) left the pool, 0 dialog(s) ended.\n"
    assert PoolUser.objects.get(pk=user.pk).status == Status.WAITING


@pytest.mark.django_db
def test_prune_pool__verbosity_0_is_silent():
    assert prune("--max-wait", "1", "--verbosity", "0") == ""


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf", "soon"])
@pytest.mark.django_db
def test_prune_pool__bad_max_wait_is_a_command_error(value):
    user = make_user(created_at=ago(600))
    with pytest.raises(CommandError):
        prune("--max-wait", value)
    assert PoolUser.objects.get(pk=user.pk).status == Status.WAITING
