"""matching.services: two-phase pairing, leaving and cancelling, on the real database."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db.models import F, Q

from dialogs.models import Dialog
from matching import services as pool
from matching.models import PoolUser
from chat import events
from chat.refusals import Refusal

from tests.support.factories import confirm, pair, pool_user, request_of

pytestmark = pytest.mark.django_db
Status = PoolUser.Status


def start(channel: str, data: dict | None = None, **fields) -> pool.PoolResult:
    return pool.pool_enter(channel_name=channel, request=request_of(data, **fields))


def user(pk) -> PoolUser:
    return PoolUser.objects.get(pk=pk)


def event_of(notice: events.Notice) -> dict:
    assert notice.message["type"] == "chat.event"
    return json.loads(notice.message["body"])


def snapshot() -> list[tuple]:
    """Everything pairing can change, to show that a refused action changed nothing."""
    users = list(PoolUser.objects.order_by("pk").values_list("pk", "status", "claimed_by", "left_at", "paired_at"))
    dialogs = list(Dialog.objects.order_by("pk").values_list("pk", "status", "end_reason", "ended_by"))
    return users + dialogs


# pool_enter


def test_pool_enter__stores_a_waiting_user():
    result = start("chan.a", {"name": " Bob ", "languageCode": "RU", "userAttributes": {"gender": "male", "age": 30},
                              "targetAttributes": {"gender": "female", "age": {"min": 18, "max": 40}}})
    assert result.notices == [] and result.dialog_id is None
    stored = user(result.user_id)
    assert (stored.name, stored.language, stored.gender, stored.age) == ("Bob", "ru", "male", 30)
    assert (stored.target_gender, stored.target_age_min, stored.target_age_max) == ("female", 18, 40)
    assert (stored.status, stored.channel_name, stored.claimed_by_id) == (Status.WAITING, "chan.a", None)
    assert stored.created_at is not None and stored.paired_at is None and stored.left_at is None


def test_pool_enter__second_compatible_user_claims_the_first():
    a = start("chan.a").user_id
    result = start("chan.b")
    b = result.user_id
    assert (user(a).status, user(a).claimed_by_id) == (Status.CLAIMED, b)
    assert (user(b).status, user(b).claimed_by_id) == (Status.PAIRING, None)
    assert result.notices == [
        events.Notice(channel="chan.a", message={"type": "pair.offer", "claimed": str(a), "claimant": str(b)})
    ]
    assert not Dialog.objects.exists()  # not before the claimed connection confirms


def test_pool_enter__incompatible_users_both_wait():
    a = start("chan.a", {"languageCode": "en"}).user_id
    b = start("chan.b", {"languageCode": "de"}).user_id
    c = start("chan.c", {"userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}}).user_id
    assert {user(x).status for x in (a, b, c)} == {Status.WAITING}


def test_pool_enter__claims_the_longest_waiting_compatible_user():
    start("chan.old-de", {"languageCode": "de"})
    older = start("chan.older").user_id
    start("chan.newer")  # claims `older`
    oldest_free = start("chan.3").user_id
    start("chan.4", {"languageCode": "de"})  # claims chan.old-de, leaves oldest_free alone
    result = start("chan.5")
    assert result.notices[0].message["claimed"] == str(oldest_free)
    assert user(older).claimed_by_id != result.user_id


@pytest.mark.parametrize("status", [Status.WAITING, Status.CLAIMED, Status.PAIRING])
def test_pool_enter__already_waiting(status):
    start("chan.x")
    if status != Status.WAITING:
        start("chan.y")  # chan.x is claimed, chan.y is pairing
    channel = "chan.x" if status != Status.PAIRING else "chan.y"
    assert user(PoolUser.objects.get(channel_name=channel).pk).status == status
    before = snapshot()
    with pytest.raises(Refusal) as caught:
        start(channel)
    assert caught.value.slug == "already_waiting"
    assert snapshot() == before


def test_pool_enter__already_in_dialog():
    pair()
    before = snapshot()
    for channel in ("chan.a", "chan.b"):
        with pytest.raises(Refusal) as caught:
            start(channel)
        assert caught.value.slug == "already_in_dialog"
    assert snapshot() == before


def test_pool_enter__after_the_dialog_ends_a_new_user():
    a, _, dialog = pair()
    pool.pool_leave(channel_name="chan.b", reason="disconnect")
    again = start("chan.a").user_id
    assert again != a
    assert user(again).status == Status.WAITING and user(a).status == Status.ENDED


def test_pool_enter__never_with_oneself():
    # A user its own target accepts is alone in the pool: it waits.
    me = start("chan.a", {"userAttributes": {"gender": "male", "age": 20},
                          "targetAttributes": {"gender": "male", "age": 20}}).user_id
    assert user(me).status == Status.WAITING
    assert pool.pair_retry(user_id=me).notices == []
    assert user(me).status == Status.WAITING


# pair_confirm


def test_pair_confirm__creates_the_dialog_and_tells_both():
    a = start("chan.a", {"name": "Ann", "languageCode": "en", "userAttributes": {"gender": "female", "age": 22}}).user_id
    offer = start("chan.b", {"languageCode": "EN", "userAttributes": {"gender": "male"}}).notices[0]
    b = uuid.UUID(offer.message["claimant"])
    result = confirm(offer)
    dialog = Dialog.objects.get()
    assert result.dialog_id == dialog.pk
    assert (dialog.first_id, dialog.second_id, dialog.status, dialog.language) == (a, b, Dialog.Status.ACTIVE, "en")
    for pk in (a, b):
        assert user(pk).status == Status.PAIRED and user(pk).paired_at == dialog.started_at
    by_channel = {n.channel: event_of(n) for n in result.notices}
    assert len(result.notices) == 2 and set(by_channel) == {"chan.a", "chan.b"}
    assert by_channel["chan.a"] == {
        "chatUUID": str(dialog.pk), "senderUUID": str(a), "eventCode": 10, "content": None,
        "serviceContent": {"partner": {"name": "Anonymous", "languageCode": "en",
                                       "userAttributes": {"gender": "male", "age": None}}},
    }
    assert by_channel["chan.b"] == {
        "chatUUID": str(dialog.pk), "senderUUID": str(b), "eventCode": 10, "content": None,
        "serviceContent": {"partner": {"name": "Ann", "languageCode": "en",
                                       "userAttributes": {"gender": "female", "age": 22}}},
    }
    assert all(n.message["chat"] == str(dialog.pk) and n.message["code"] == 10 for n in result.notices)


def test_pair_confirm__twice_makes_one_dialog():
    start("chan.a")
    offer = start("chan.b").notices[0]
    confirm(offer)
    before = snapshot()
    again = confirm(offer)
    assert again.notices == [] and again.dialog_id is None
    assert Dialog.objects.count() == 1 and snapshot() == before


def test_pair_confirm__from_another_connection_does_nothing():
    start("chan.a")
    offer = start("chan.b").notices[0]
    before = snapshot()
    result = pool.pair_confirm(claimed_id=offer.message["claimed"], claimant_id=offer.message["claimant"],
                               channel_name="chan.b")
    assert result == pool.PoolResult()
    assert snapshot() == before and not Dialog.objects.exists()


def test_pair_confirm__unknown_ids_do_nothing():
    start("chan.a")
    offer = start("chan.b").notices[0]
    before = snapshot()
    assert pool.pair_confirm(claimed_id=uuid.uuid4(), claimant_id=offer.message["claimant"],
                             channel_name="chan.a") == pool.PoolResult()
    assert pool.pair_confirm(claimed_id=offer.message["claimed"], claimant_id=uuid.uuid4(),
                             channel_name="chan.a").dialog_id is None
    assert snapshot() == before and not Dialog.objects.exists()


def test_pair_confirm__stale_after_the_claimant_left():
    a = start("chan.a").user_id
    offer = start("chan.b").notices[0]
    pool.pool_leave(channel_name="chan.b", reason="disconnect")
    result = confirm(offer)
    assert result.dialog_id is None and not Dialog.objects.exists()
    assert user(a).status == Status.WAITING
    assert all(n.message["type"] == "pair.retry" for n in result.notices)


def test_pair_confirm__stale_after_release_the_alive_user_waits_again():
    a = start("chan.a").user_id
    offer = start("chan.b").notices[0]
    b = uuid.UUID(offer.message["claimant"])
    pool.pair_release(claimant_id=b)  # chan.a was too slow
    assert user(a).status == Status.GONE and user(b).status == Status.WAITING
    result = confirm(offer)  # ... but it answers after all
    assert result.dialog_id is None and not Dialog.objects.exists()
    assert user(a).status == Status.WAITING and user(a).left_at is None
    assert result.notices == [events.Notice(channel="chan.a", message={"type": "pair.retry", "user": str(a)})]
    # Its retry pairs it with the claimant, which waits too.
    retry = pool.pair_retry(user_id=a)
    assert retry.notices[0].message == {"type": "pair.offer", "claimed": str(b), "claimant": str(a)}
    assert confirm(retry.notices[0]).dialog_id is not None


def test_pair_confirm__stale_offer_after_the_claimant_moved_on():
    a = start("chan.a").user_id
    stale = start("chan.b").notices[0]
    b = uuid.UUID(stale.message["claimant"])
    c = start("chan.c").user_id  # waits: a is claimed
    second = pool.pair_release(claimant_id=b)  # a released, b claims c
    assert second.notices[0].message["claimed"] == str(c)
    confirm(stale)  # a's late answer
    assert user(b).status == Status.PAIRING and user(c).status == Status.CLAIMED
    confirm(second.notices[0])
    dialog = Dialog.objects.get()
    assert {dialog.first_id, dialog.second_id} == {b, c}
    assert user(a).status == Status.WAITING


# pair_release


def test_pair_release__the_unconfirmed_user_is_gone_and_the_next_is_claimed():
    a = start("chan.a").user_id
    b = start("chan.b").user_id  # claims a
    c = start("chan.c", {"targetAttributes": {"gender": "female"}}).user_id  # waits; refuses b
    e = start("chan.e").user_id  # waits: c refuses it too, a and b are busy
    assert user(c).status == user(e).status == Status.WAITING
    result = pool.pair_release(claimant_id=b)
    assert user(a).status == Status.GONE and user(a).left_at is not None
    assert (user(b).status, user(e).status, user(e).claimed_by_id) == (Status.PAIRING, Status.CLAIMED, b)
    assert user(c).status == Status.WAITING
    assert result.notices == [
        events.Notice(channel="chan.e", message={"type": "pair.offer", "claimed": str(e), "claimant": str(b)})
    ]


def test_pair_release__no_other_candidate_the_claimant_waits():
    a = start("chan.a").user_id
    b = start("chan.b").user_id
    result = pool.pair_release(claimant_id=b)
    assert result.notices == []
    assert user(a).status == Status.GONE and user(b).status == Status.WAITING
    # The gone user is never offered again.
    c = start("chan.c")
    assert c.notices[0].message["claimed"] == str(b)


def test_pair_release__after_the_pair_was_confirmed_does_nothing():
    a, b, dialog = pair()
    before = snapshot()
    assert pool.pair_release(claimant_id=b) == pool.PoolResult()
    assert snapshot() == before


def test_pair_release__is_idempotent():
    start("chan.a")
    b = start("chan.b").user_id
    pool.pair_release(claimant_id=b)
    before = snapshot()
    assert pool.pair_release(claimant_id=b) == pool.PoolResult()
    assert snapshot() == before


# pair_retry


def test_pair_retry__claims_a_partner_that_arrived_meanwhile():
    a = PoolUser.objects.get(pk=start("chan.a").user_id)
    b = pool_user({}, channel_name="chan.b")  # stored without pairing, as if pool_enter had missed a
    result = pool.pair_retry(user_id=b.pk)
    assert result.notices[0].message == {"type": "pair.offer", "claimed": str(a.pk), "claimant": str(b.pk)}


def test_pair_retry__of_a_user_no_longer_waiting_does_nothing():
    a, b, _ = pair()
    before = snapshot()
    assert pool.pair_retry(user_id=a) == pool.PoolResult()
    assert pool.pair_retry(user_id=uuid.uuid4()) == pool.PoolResult()
    assert snapshot() == before


# pool_leave


def test_pool_leave__of_a_waiting_user():
    a = start("chan.a").user_id
    result = pool.pool_leave(channel_name="chan.a", reason="disconnect")
    assert result.notices == []
    assert user(a).status == Status.GONE and user(a).left_at is not None
    assert start("chan.b").notices == []  # nobody to claim


def test_pool_leave__of_a_claimant_returns_its_claimed_user_to_the_pool():
    a = start("chan.a").user_id
    b = start("chan.b").user_id
    result = pool.pool_leave(channel_name="chan.b", reason="disconnect")
    assert user(a).status == Status.WAITING
    assert user(b).status == Status.GONE
    assert result.notices == [events.Notice(channel="chan.a", message={"type": "pair.retry", "user": str(a)})]


def test_pool_leave__of_a_claimed_user_tells_its_claimant():
    a = start("chan.a").user_id
    b = start("chan.b").user_id
    result = pool.pool_leave(channel_name="chan.a", reason="disconnect")
    assert user(a).status == Status.GONE and user(b).status == Status.PAIRING
    assert result.notices == [events.Notice(channel="chan.b", message={"type": "pair.declined", "claimant": str(b)})]
    # The claimant's consumer answers a decline with pair_release: it waits, a is not paired.
    pool.pair_release(claimant_id=b)
    assert user(b).status == Status.WAITING and user(a).status == Status.GONE


@pytest.mark.parametrize("reason", ["disconnect", "timeout"])
def test_pool_leave__in_a_dialog_ends_it(reason):
    a, b, dialog = pair()
    result = pool.pool_leave(channel_name="chan.b", reason=reason)
    dialog.refresh_from_db()
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == (Dialog.Status.ENDED, reason, b)
    assert dialog.ended_at is not None
    assert user(a).status == Status.ENDED and user(b).status == Status.ENDED
    assert result.dialog_id == dialog.pk
    assert [n.channel for n in result.notices] == ["chan.a", "chan.b"]
    notice = result.notices[0]
    assert result.notices[1].message is notice.message
    assert event_of(notice) == {"chatUUID": str(dialog.pk), "senderUUID": str(b), "eventCode": 30,
                                "serviceContent": {"reason": reason}, "content": None}


def test_pool_leave__is_idempotent():
    pair()
    pool.pool_leave(channel_name="chan.a", reason="disconnect")
    before = snapshot()
    for channel in ("chan.a", "chan.b", "chan.nobody"):
        assert pool.pool_leave(channel_name=channel, reason="disconnect") == pool.PoolResult()
    assert snapshot() == before


# pool_cancel


def test_pool_cancel__of_a_waiting_user():
    a = start("chan.a").user_id
    result = pool.pool_cancel(channel_name="chan.a")
    assert user(a).status == Status.CANCELLED and user(a).left_at is not None
    [notice] = result.notices
    assert notice.channel == "chan.a"
    assert event_of(notice) == {"chatUUID": None, "senderUUID": None, "eventCode": 30,
                                "serviceContent": {"reason": "cancelled"}, "content": None}
    assert start("chan.b").notices == []


def test_pool_cancel__of_a_claimed_user_declines_the_claim():
    a = start("chan.a").user_id
    b = start("chan.b").user_id
    result = pool.pool_cancel(channel_name="chan.a")
    assert user(a).status == Status.CANCELLED
    types = [(n.channel, n.message["type"]) for n in result.notices]
    assert types == [("chan.b", "pair.declined"), ("chan.a", "chat.event")]
    assert user(b).status == Status.PAIRING


def test_pool_cancel__of_a_claimant_frees_its_claimed_user():
    a = start("chan.a").user_id
    start("chan.b")
    result = pool.pool_cancel(channel_name="chan.b")
    assert user(a).status == Status.WAITING
    assert [(n.channel, n.message["type"]) for n in result.notices] == [("chan.a", "pair.retry"), ("chan.b", "chat.event")]


def test_pool_cancel__nothing_to_cancel():
    pair()
    before = snapshot()
    assert pool.pool_cancel(channel_name="chan.a") is None  # in a dialog: /stop ends it instead
    assert pool.pool_cancel(channel_name="chan.nobody") is None
    assert snapshot() == before


# pool_release (dead processes, lost disconnects)


def test_pool_release__ends_dialogs_and_leaves_the_pool():
    a, b, dialog = pair()
    w = start("chan.w").user_id
    notices = pool.pool_release(user_ids=[a, w, uuid.uuid4()], reason="disconnect")
    dialog.refresh_from_db()
    assert dialog.status == Dialog.Status.ENDED and dialog.ended_by_id == a
    assert user(w).status == Status.GONE
    assert [(n.channel, event_of(n)["serviceContent"]) for n in notices] == [
        ("chan.a", {"reason": "disconnect"}), ("chan.b", {"reason": "disconnect"})
    ]


# Invariants over a longer run


def test_pairing_run__each_user_in_at_most_one_dialog():
    ids = []
    for i in range(30):
        result = start(f"chan.{i}", {"languageCode": ("en", "de")[i % 2]})
        ids.append(result.user_id)
        for notice in result.notices:
            confirm(notice)
    assert Dialog.objects.count() == 14  # 15 per language: 7 pairs each, one waits
    for pk in ids:
        assert Dialog.objects.filter(Q(first=pk) | Q(second=pk)).count() <= 1
    assert not Dialog.objects.filter(first=F("second")).exists()


def test_claim__a_stale_candidate_is_skipped(monkeypatch):
    # The selector's answer can be stale by the time of the claim (another transaction, or a
    # backend where select_for_update does nothing): the conditional claim is the guard.
    a = start("chan.a").user_id
    b = start("chan.b").user_id  # claims a
    c = start("chan.c").user_id  # waits
    monkeypatch.setattr(pool, "pool_candidates_for",
                        lambda user: PoolUser.objects.exclude(pk=user.pk).order_by("created_at", "pk"))
    result = start("chan.d")
    assert result.notices[0].message["claimed"] == str(c)
    assert (user(a).status, user(a).claimed_by_id) == (Status.CLAIMED, b)
    assert user(b).status == Status.PAIRING
