import pytest
from django.urls import reverse

from dialogs.models import Dialog, Message
from matching.models import PoolUser
from tests.support.events import LEFT, event_body
from tests.support.factories import ago, assert_nothing_on, listed, make_dialog, make_user, new_channel, receive_event

Status = PoolUser.Status
CHANGELIST = "admin:dialogs_dialog_changelist"


@pytest.fixture
def dialogs(db):
    chatty = make_dialog(messages=3, language="en")
    stopped = make_dialog(
        ended_at=ago(60), end_reason=Dialog.EndReason.STOP, language="ru", messages=1
    )
    Dialog.objects.filter(pk=stopped.pk).update(ended_by=stopped.second)
    quiet = make_dialog(ended_at=ago(30), end_reason=Dialog.EndReason.ADMIN, language="en")
    return chatty, Dialog.objects.get(pk=stopped.pk), quiet


def test_dialog_changelist__columns_and_message_counts(admin_client, dialogs):
    chatty, stopped, quiet = dialogs
    response = admin_client.get(reverse(CHANGELIST))
    counts = {d.pk: d.message_count for d in listed(response)}
    assert counts == {chatty.pk: 3, stopped.pk: 1, quiet.pk: 0}
    html = response.content.decode()
    for header in ("Status", "Language", "Started at", "Ended at", "How it ended", "Messages"):
        assert f">{header}<" in html, header
    assert "stop by second participant" in html
    assert '<td class="field-how_it_ended">admin</td>' in html


def test_dialog_changelist__ordered_by_message_count(admin_client, dialogs):
    chatty, stopped, quiet = dialogs
    response = admin_client.get(reverse(CHANGELIST), {"o": "7"})
    assert [d.pk for d in listed(response)] == [quiet.pk, stopped.pk, chatty.pk]


def test_dialog_changelist__search_by_chat_uuid(admin_client, dialogs):
    chatty, stopped, quiet = dialogs
    assert listed(admin_client.get(reverse(CHANGELIST), {"q": str(stopped.pk)})) == [stopped]
    assert listed(admin_client.get(reverse(CHANGELIST), {"q": stopped.pk.hex})) == [stopped]


@pytest.mark.parametrize("side", ["first", "second"])
def test_dialog_changelist__search_by_sender_uuid(admin_client, dialogs, side):
    chatty, stopped, quiet = dialogs
    sender = getattr(quiet, f"{side}_id")
    assert listed(admin_client.get(reverse(CHANGELIST), {"q": str(sender)})) == [quiet]


def test_dialog_changelist__search_for_nothing_known(admin_client, dialogs):
    assert listed(admin_client.get(reverse(CHANGELIST), {"q": "not-a-uuid"})) == []
    assert listed(admin_client.get(reverse(CHANGELIST), {"q": "6f1f2a3e-0000-4000-8000-000000000000"})) == []


def test_dialog_changelist__filters(admin_client, dialogs):
    chatty, stopped, quiet = dialogs

    def pks(params):
        return {d.pk for d in listed(admin_client.get(reverse(CHANGELIST), params))}

    assert pks({"status__exact": "active"}) == {chatty.pk}
    assert pks({"status__exact": "ended"}) == {stopped.pk, quiet.pk}
    assert pks({"end_reason__exact": "admin"}) == {quiet.pk}
    assert pks({"language": "ru"}) == {stopped.pk}
    assert pks({"language": "en", "status__exact": "ended"}) == {quiet.pk}


def test_dialog_page__participants_and_messages_read_only(admin_client, dialogs):
    chatty, stopped, quiet = dialogs
    url = reverse("admin:dialogs_dialog_change", args=[chatty.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    for user in (chatty.first, chatty.second):
        assert str(user.pk) in html
        assert reverse("admin:matching_pooluser_change", args=[user.pk]) in html
    for message in chatty.messages.all():
        assert message.content in html
    assert "message 0" in html and "message 2" in html
    # Nothing to edit or save: no submit buttons, no message inputs, no add-another row.
    assert 'name="_save"' not in html
    assert 'name="_continue"' not in html
    assert 'name="messages-0-content"' not in html
    assert "<textarea" not in html
    assert response.context["has_change_permission"] is False
    [messages] = response.context["inline_admin_formsets"]
    assert not (messages.has_add_permission or messages.has_change_permission or messages.has_delete_permission)
    assert messages.formset.max_num == 0


def test_dialog_page__cannot_be_changed_added_or_deleted(admin_client, dialogs):
    chatty, stopped, quiet = dialogs
    url = reverse("admin:dialogs_dialog_change", args=[chatty.pk])
    response = admin_client.post(url, {"status": "ended", "language": "xx"})
    assert response.status_code == 403
    chatty.refresh_from_db()
    assert (chatty.status, chatty.language) == (Dialog.Status.ACTIVE, "en")
    assert admin_client.get(reverse("admin:dialogs_dialog_add")).status_code == 403
    assert admin_client.get(reverse("admin:dialogs_dialog_delete", args=[chatty.pk])).status_code == 403
    assert Message.objects.filter(dialog=chatty).count() == 3


@pytest.mark.django_db(transaction=True)
def test_end_selected_dialogs__ends_them_and_tells_both_participants(admin_client):
    channels = [new_channel() for _ in range(4)]
    users = [make_user(status=Status.PAIRED, channel=c) for c in channels]
    ending = make_dialog(users[0], users[1], messages=1)
    untouched = make_dialog(users[2], users[3])
    already = make_dialog(ended_at=ago(60))

    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "end_dialogs", "_selected_action": [str(ending.pk), str(already.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert shown == ["Ended 1 dialog(s).", "1 dialog(s) had already ended."]
    ending.refresh_from_db()
    assert ending.status == Dialog.Status.ENDED
    assert ending.end_reason == Dialog.EndReason.ADMIN
    assert ending.ended_by_id is None
    assert set(PoolUser.objects.filter(pk__in=[users[0].pk, users[1].pk]).values_list("status", flat=True)) == {
        Status.ENDED
    }
    for channel in channels[:2]:
        assert receive_event(channel) == event_body(LEFT, chat=str(ending.pk), service={"reason": "admin"})
    assert Dialog.objects.get(pk=untouched.pk).status == Dialog.Status.ACTIVE
    assert Dialog.objects.get(pk=already.pk).end_reason == Dialog.EndReason.STOP
    for channel in channels[2:]:
        assert_nothing_on(channel)


def test_end_selected_dialogs__needs_the_change_permission(client, dialogs):
    from django.contrib.auth.models import Permission, User

    chatty, stopped, quiet = dialogs
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_dialog"))
    client.force_login(viewer)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "end_dialogs" not in response.content.decode()
    client.post(reverse(CHANGELIST), {"action": "end_dialogs", "_selected_action": [str(chatty.pk)]})
    assert Dialog.objects.get(pk=chatty.pk).status == Dialog.Status.ACTIVE


def test_message_inline_is_read_only_by_itself(rf, admin_client):
    """Even if dialogs became editable, their messages would stay as they were said."""
    from django.contrib import admin
    from django.contrib.auth.models import User

    from dialogs.admin import MessageInline

    request = rf.get("/")
    request.user = User.objects.get(username="admin")
    inline = MessageInline(Dialog, admin.site)
    assert not inline.has_add_permission(request, None)
    assert not inline.has_change_permission(request, None)
    assert not inline.has_delete_permission(request, None)
