import re
from datetime import timedelta

import pytest
from django.urls import reverse

from dialogs.models import Dialog
from matching.admin import format_duration
from matching.models import PoolUser
from tests.support.events import LEFT, event_body
from tests.support.factories import (
    ago, assert_nothing_on, listed, live_process, make_dialog, make_user, new_channel, receive_event,
)

Status = PoolUser.Status
CHANGELIST = "admin:matching_pooluser_changelist"


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (4.9, "4s"), (59, "59s"), (60, "1m 00s"), (125, "2m 05s"), (3723, "1h 02m 03s")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.django_db
def test_pool_changelist__status_and_wait_time(admin_client):
    waiting = make_user(name="Waiter", created_at=ago(125))
    created = ago(3600)
    paired = make_user(
        name="Paired", status=Status.PAIRED, created_at=created, paired_at=created + timedelta(seconds=30)
    )
    cancelled = make_user(
        name="Quitter", status=Status.CANCELLED, created_at=created, left_at=created + timedelta(seconds=75)
    )

    response = admin_client.get(reverse(CHANGELIST))

    assert {u.pk for u in listed(response)} == {waiting.pk, paired.pk, cancelled.pk}
    rows = {
        name: row
        for row in re.findall(r"<tr>.*?</tr>", response.content.decode(), re.S)
        for name in ("Waiter", "Paired", "Quitter")
        if f">{name}<" in row
    }
    assert re.search(r'field-wait_time">2m 0[5-9]s \(waiting\)<', rows["Waiter"]), rows["Waiter"]
    assert 'field-wait_time">30s<' in rows["Paired"]
    assert 'field-wait_time">1m 15s<' in rows["Quitter"]
    assert 'field-status">waiting for a partner<' in rows["Waiter"]
    assert 'field-status">in a dialog<' in rows["Paired"]


@pytest.mark.django_db
def test_pool_changelist__filters_and_search(admin_client):
    waiting_en = make_user(language="en", gender="female")
    waiting_ru = make_user(language="ru", name="Ivan")
    gone = make_user(language="en", status=Status.GONE)

    def pks(params):
        return {u.pk for u in listed(admin_client.get(reverse(CHANGELIST), params))}

    assert pks({"status__exact": "waiting"}) == {waiting_en.pk, waiting_ru.pk}
    assert pks({"status__exact": "gone"}) == {gone.pk}
    assert pks({"language": "en"}) == {waiting_en.pk, gone.pk}
    assert pks({"gender__exact": "female"}) == {waiting_en.pk}
    assert pks({"q": str(gone.pk)}) == {gone.pk}
    assert pks({"q": "ivan"}) == {waiting_ru.pk}


@pytest.mark.django_db
def test_pool_user_page_is_read_only(admin_client):
    user = make_user(name="Reader")
    url = reverse("admin:matching_pooluser_change", args=[user.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Reader" in html and 'name="_save"' not in html
    assert admin_client.post(url, {"name": "Changed"}).status_code == 403
    assert PoolUser.objects.get(pk=user.pk).name == "Reader"
    assert admin_client.get(reverse("admin:matching_pooluser_add")).status_code == 403


@pytest.mark.django_db
def test_server_process_changelist(admin_client):
    process = live_process()
    make_user(process=process)
    make_user(process=process, status=Status.GONE)
    response = admin_client.get(reverse("admin:matching_serverprocess_changelist"))
    assert [(p.pk, p.held_users) for p in listed(response)] == [(process.pk, 1)]


@pytest.mark.django_db(transaction=True)
def test_remove_selected_users_from_the_pool(admin_client):
    waiting = make_user(channel=new_channel())
    claimant = make_user(status=Status.PAIRING, channel=new_channel())
    claimed = make_user(status=Status.CLAIMED, claimed_by=claimant, channel=new_channel())
    in_dialog = make_user(status=Status.PAIRED, channel=new_channel())
    dialog = make_dialog(in_dialog)
    bystander = make_user(channel=new_channel())

    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "remove_from_pool", "_selected_action": [str(u.pk) for u in (waiting, claimed, in_dialog)]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "Removed 2 user(s) from the pool.",
        "1 user(s) were not in the pool (in a dialog or already gone); end a dialog from the dialogs page.",
    ]
    for user in (waiting, claimed):
        user.refresh_from_db()
        assert user.status == Status.CANCELLED and user.left_at is not None
        assert receive_event(user.channel_name) == event_body(LEFT, service={"reason": "admin"})
    # A row an earlier version left claiming it is not selected: untouched, told nothing.
    assert PoolUser.objects.get(pk=claimant.pk).status == Status.PAIRING
    assert_nothing_on(claimant.channel_name)
    # A user in a dialog is not in the pool: untouched, and so is its dialog.
    assert PoolUser.objects.get(pk=in_dialog.pk).status == Status.PAIRED
    assert Dialog.objects.get(pk=dialog.pk).status == Dialog.Status.ACTIVE
    assert_nothing_on(in_dialog.channel_name)
    assert PoolUser.objects.get(pk=bystander.pk).status == Status.WAITING
    assert_nothing_on(bystander.channel_name)
