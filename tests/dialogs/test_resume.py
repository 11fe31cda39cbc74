"""dialogs.resume on the real database: detach, resume and the end of a grace, and how they
meet the rest of the chat (a stop, a process's cleanup) without a live server."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone

import dialogs.resume as module

from chat.refusals import Refusal
from chat.requests import DialogRequest
from chat.tokens import ResumeToken
from dialogs.models import Dialog, Message
from dialogs.pairing import process_reconcile, process_release
from dialogs.resume import graces_expire, participant_detach, participant_resume
from dialogs.services import dialog_stop
from matching.models import PoolUser, ServerProcess
from matching.processes import held_users
from tests.support.factories import dialog_of, entry, start_many, this_process

pytestmark = pytest.mark.django_db
Status = PoolUser.Status
GRACE = 30


def graced_pair(grace: int = GRACE):
    """A (with `grace` and a token) paired with B (no grace): A, A's token, B, the dialog."""
    token = ResumeToken.new()
    a = start_many([replace(entry("chan.a"), resume_grace=grace, resume_token=token)])[0]
    b = start_many([entry("chan.b")])[0]
    return PoolUser.objects.get(pk=a.user_id), token, PoolUser.objects.get(pk=b.user_id), dialog_of(b.user_id)


def resume(token: ResumeToken, channel: str = "chan.new", grace: int = 0):
    new_token = ResumeToken.new()
    return participant_resume(
        token=token, channel_name=channel, process_id=this_process().pk, grace=grace, new_token=new_token
    ), new_token


def refused_with(slug: str, call) -> None:
    with pytest.raises(Refusal) as refused:
        call()
    assert refused.value.slug == slug


def test_only_a_paired_user_with_a_grace_is_detached():
    a, _, b, dialog = graced_pair()
    assert participant_detach(channel_name="chan.b", delivered_seq=0) == 0  # B asked for none
    assert participant_detach(channel_name="chan.nobody", delivered_seq=0) == 0
    assert participant_detach(channel_name="chan.a", delivered_seq=0) == GRACE
    a.refresh_from_db()
    assert (a.status, a.detached_seq) == (Status.PAIRED, 0) and a.detached_at is not None
    dialog.refresh_from_db()
    assert dialog.status == Dialog.Status.ACTIVE


def test_resume_moves_the_user_to_the_new_connection_and_rotates_the_token():
    a, token, _, dialog = graced_pair()
    Message.objects.create(dialog=dialog, author=a, content="seen", seq=1)
    Dialog.objects.filter(pk=dialog.pk).update(last_seq=1)
    participant_detach(channel_name="chan.a", delivered_seq=1)
    resumed, new_token = resume(token, grace=10)
    a.refresh_from_db()
    assert (a.channel_name, a.resume_selector, a.resume_grace) == ("chan.new", new_token.selector, 10)
    assert new_token.matches(a.resume_verifier) and not token.matches(a.resume_verifier)
    assert a.detached_at is None and a.detached_seq is None
    assert (resumed.user_id, resumed.dialog_id, resumed.first_seq, resumed.missed) == (a.pk, dialog.pk, 2, [])
    assert resumed.notices == []  # nothing held the user: no connection to close
    refused_with("resume_failed", lambda: resume(token, "chan.other"))  # single use


def test_a_resume_of_a_user_still_attached_closes_its_connection_and_replays_nothing():
    _, token, _, dialog = graced_pair()
    resumed, _ = resume(token)
    assert [(n.channel, n.message["type"]) for n in resumed.notices] == [("chan.a", "resume.taken")]
    assert resumed.missed == [] and resumed.first_seq == dialog.last_seq + 1


def test_resume_refusals():
    _, token, b, dialog = graced_pair()
    refused_with("resume_failed", lambda: resume(ResumeToken(token.selector, token.verifier + "x")))
    refused_with("resume_failed", lambda: resume(ResumeToken.new()))
    refused_with("already_in_dialog", lambda: resume(token, "chan.b"))  # a connection holds one user
    participant_detach(channel_name="chan.a", delivered_seq=0)
    PoolUser.objects.filter(channel_name="chan.a").update(detached_at=timezone.now() - timedelta(seconds=GRACE + 1))
    refused_with("resume_failed", lambda: resume(token))  # the grace ran out (not ended yet)
    dialog_stop(request=_stop(dialog, b), held_user=b.pk)
    refused_with("resume_failed", lambda: resume(token))  # the dialog has ended


def _stop(dialog, user):
    return DialogRequest(chat=str(dialog.pk), sender=str(user.pk), content=None)


def test_a_grace_that_ran_out_ends_the_dialog_as_a_disconnect_once():
    a, _, b, dialog = graced_pair(grace=5)
    participant_detach(channel_name="chan.a", delivered_seq=0)
    assert graces_expire() == (0, [])  # not yet
    later = timezone.now() + timedelta(seconds=6)
    ended, notices = graces_expire(now=later)
    assert ended == 1 and sorted(n.channel for n in notices) == ["chan.a", "chan.b"]
    dialog.refresh_from_db()
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == (Dialog.Status.ENDED, "disconnect", a.pk)
    assert graces_expire(now=later) == (0, [])


def test_a_resumed_user_is_not_ended_by_a_sweep_that_read_it_detached(monkeypatch):
    a, token, _, dialog = graced_pair(grace=5)
    participant_detach(channel_name="chan.a", delivered_seq=0)
    later = timezone.now() + timedelta(seconds=6)
    active_dialog = module._active_dialog

    def resumed_meanwhile(user_id):  # the sweep read the detached users, then the user resumed
        PoolUser.objects.filter(pk=user_id).update(detached_at=None, channel_name="chan.new")
        return active_dialog(user_id)

    monkeypatch.setattr(module, "_active_dialog", resumed_meanwhile)
    assert graces_expire(now=later) == (0, [])
    dialog.refresh_from_db()
    assert dialog.status == Dialog.Status.ACTIVE


def test_a_detached_user_waits_for_its_grace_not_for_its_process_cleanup():
    a, _, b, dialog = graced_pair()
    process = this_process()
    PoolUser.objects.filter(pk=b.pk).update(process=ServerProcess.objects.create(hostname="other", pid=1))
    participant_detach(channel_name="chan.a", delivered_seq=0)
    assert a.pk not in held_users(process_ids=[process.pk])
    assert process_reconcile(process, live_channels={"chan.b"}) == []  # chan.a is closed, on purpose
    process_release(silent={process.pk: process.last_seen})
    dialog.refresh_from_db()
    assert dialog.status == Dialog.Status.ACTIVE
