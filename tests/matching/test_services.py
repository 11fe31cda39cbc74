"""Pairing in batches (matching.services with dialogs.pairing), leaving and cancelling,
on the real database."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.db.models import F, Q

from dialogs.models import Dialog
from dialogs.pairing import Started, dialogs_start, user_leave, users_release
from matching import processes
from matching import services as pool
from matching.models import PoolUser, ServerProcess
from chat import events
from chat.refusals import Refusal

from tests.support.factories import (
    ALONE_OR_IN_A_BATCH, aside, dialog_of, entry, pair, pool_user, start, start_in_a_batch, start_many, this_process,
)

pytestmark = pytest.mark.django_db
Status = PoolUser.Status


def user(pk) -> PoolUser:
    return PoolUser.objects.get(pk=pk)


def event_of(notice: events.Notice) -> dict:
    assert notice.message["type"] == "chat.event"
    return json.loads(notice.message["body"])


def snapshot() -> list[tuple]:
    """Everything pairing can change, to show that a refused action changed nothing."""
    users = list(PoolUser.objects.order_by("pk").values_list("pk", "status", "left_at", "paired_at"))
    dialogs = list(Dialog.objects.order_by("pk").values_list("pk", "status", "end_reason", "ended_by"))
    return users + dialogs


# Entering the pool, one /start per batch


def test_start__stores_a_waiting_user():
    result = start("chan.a", {"name": " Bob ", "languageCode": "RU", "userAttributes": {"gender": "male", "age": 30},
                              "targetAttributes": {"gender": "female", "age": {"min": 18, "max": 40}}})
    assert result.notices == [] and dialog_of(result.user_id) is None
    stored = user(result.user_id)
    assert (stored.name, stored.language, stored.gender, stored.age) == ("Bob", "ru", "male", 30)
    assert (stored.target_gender, stored.target_age_min, stored.target_age_max) == ("female", 18, 40)
    assert (stored.status, stored.channel_name, stored.process_id) == (Status.WAITING, "chan.a", this_process().pk)
    assert stored.created_at is not None and stored.paired_at is None and stored.left_at is None


@ALONE_OR_IN_A_BATCH
def test_start__second_compatible_user_is_paired_with_the_first_and_both_are_told(starter):
    a = start("chan.a", {"name": "Ann", "languageCode": "en", "userAttributes": {"gender": "female", "age": 22}}).user_id
    result = starter("chan.b", {"languageCode": "EN", "userAttributes": {"gender": "male"}})
    b = result.user_id
    dialog = Dialog.objects.get()
    assert dialog_of(b) == dialog
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


@ALONE_OR_IN_A_BATCH
def test_start__incompatible_users_all_wait(starter):
    a = starter("chan.a", {"languageCode": "en"}).user_id
    b = starter("chan.b", {"languageCode": "de"}).user_id
    c = starter("chan.c", {"userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}}).user_id
    assert {user(x).status for x in (a, b, c)} == {Status.WAITING}
    assert not Dialog.objects.exists()


@ALONE_OR_IN_A_BATCH
def test_start__pairs_with_the_longest_waiting_compatible_user(starter):
    start("chan.old-de", {"languageCode": "de"})
    older = start("chan.older").user_id
    newer = starter("chan.newer")  # paired with `older`
    oldest_free = start("chan.3").user_id
    starter("chan.4", {"languageCode": "de"})  # paired with chan.old-de, leaves oldest_free alone
    result = starter("chan.5")
    assert dialog_of(newer.user_id).first_id == older
    assert {dialog_of(result.user_id).first_id} == {oldest_free}


@pytest.mark.parametrize("held", ["waiting", "paired"])
def test_start__a_connection_holds_one_user(held):
    start("chan.x")
    if held == "paired":
        start("chan.y")
    before = snapshot()
    with pytest.raises(Refusal) as caught:
        start("chan.x")
    assert caught.value.slug == ("already_waiting" if held == "waiting" else "already_in_dialog")
    assert snapshot() == before


def test_start__after_the_dialog_ends_a_new_user():
    a, _, dialog = pair()
    user_leave(channel_name="chan.b", reason="disconnect")
    again = start("chan.a").user_id
    assert again != a
    assert user(again).status == Status.WAITING and user(a).status == Status.ENDED


@ALONE_OR_IN_A_BATCH
def test_start__never_with_oneself(starter):
    # A user its own target accepts is alone in the pool: it waits.
    me = starter("chan.a", {"userAttributes": {"gender": "male", "age": 20},
                          "targetAttributes": {"gender": "male", "age": 20}}).user_id
    assert user(me).status == Status.WAITING and not Dialog.objects.exists()


@ALONE_OR_IN_A_BATCH
def test_start__the_dialogs_first_user_is_the_one_that_came_first(starter):
    # Another process's clock may run ahead: its waiting user can look younger than the newcomer.
    ahead = pool_user({}, channel_name="chan.ahead", process=this_process(),
                      created_at=timezone.now() + timedelta(hours=1))
    result = starter("chan.new")
    dialog = dialog_of(result.user_id)
    assert (dialog.first_id, dialog.second_id) == (result.user_id, ahead.pk)
    [mine, theirs] = [event_of(notice) for notice in result.notices]
    assert mine["chatUUID"] == theirs["chatUUID"] == str(dialog.pk)
    assert (mine["senderUUID"], theirs["senderUUID"]) == (str(result.user_id), str(ahead.pk))


@ALONE_OR_IN_A_BATCH
def test_start__former_partners_are_not_paired_again_within_the_window(starter, settings):
    settings.RANDOMCHAT_REMATCH_WINDOW = 300
    man = {"userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}}
    woman = {"userAttributes": {"gender": "female"}, "targetAttributes": {"gender": "male"}}
    pair("chan.a", "chan.b", man, woman)
    user_leave(channel_name="chan.a", reason="disconnect")
    start("chan.a", man)  # waits longest, but chan.b's dialog with it just ended
    stranger = start("chan.c", man).user_id
    result = starter("chan.b", woman)
    assert dialog_of(result.user_id).first_id == stranger
    settings.RANDOMCHAT_REMATCH_WINDOW = 0
    assert dialog_of(starter("chan.d", woman).user_id).first.channel_name == "chan.a"


# Many /starts in one batch


def test_batch__pairs_its_own_users_in_arrival_order():
    waiting = start("chan.w").user_id
    results = start_many([entry(f"chan.{i}") for i in range(5)])
    assert all(isinstance(r, Started) for r in results)
    firsts = dict(Dialog.objects.values_list("second_id", "first_id"))
    ids = [r.user_id for r in results]
    # The one who waited pairs with the first newcomer, then newcomers pair in order.
    assert firsts == {ids[0]: waiting, ids[2]: ids[1], ids[4]: ids[3]}
    assert [len(r.notices) for r in results] == [2, 2, 0, 2, 0]  # one side sends a pair's 10s
    assert dialog_of(ids[2]) == dialog_of(ids[1]) is not None


def test_batch__a_refusal_leaves_the_others_alone():
    start("chan.x", {"languageCode": "de"})
    results = start_many([entry("chan.a"), entry("chan.x"), entry("chan.b")])
    assert isinstance(results[1], Refusal) and results[1].slug == "already_waiting"
    assert dialog_of(results[2].user_id) is not None
    assert Dialog.objects.count() == 1 and user(results[0].user_id).status == Status.PAIRED


def test_batch__a_held_connection_refuses_only_itself_whatever_comes_after_it():
    # On SQLite the held check's cursor once read on past the batch's insert: chan.b, stored
    # after chan.a's row was found, was read as held too, and refused although stored.
    start("chan.a", {"languageCode": "de"})
    results = start_many([entry("chan.a"), entry("chan.b")])
    assert results[0].slug == "already_waiting" and isinstance(results[1], Started)
    assert user(results[1].user_id).status == Status.WAITING


def test_batch__one_connection_twice_is_refused_the_second_time():
    results = start_many([entry("chan.a"), entry("chan.a")])
    assert isinstance(results[0], Started) and results[1].slug == "already_waiting"
    assert PoolUser.objects.count() == 1 and not Dialog.objects.exists()


def test_batch__only_compatible_pairs_in_one_batch():
    shapes = [{"languageCode": "de"}, {"userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}},
              {"userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}},
              {"userAttributes": {"gender": "female"}, "targetAttributes": {"gender": "male"}}]
    results = start_many([entry(f"chan.{i}", shape) for i, shape in enumerate(shapes)])
    dialog = Dialog.objects.get()
    assert (dialog.first_id, dialog.second_id) == (results[1].user_id, results[3].user_id)


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in_a_batch"])
def test_batch__starts_that_avoid_nobody_look_up_no_former_partners(alone):
    # A connection with no dialog ended within the window (its first /start, say): the batch
    # skips the rematch look-up.
    others = [] if alone else [dataclasses.replace(aside("chan.a"), avoids_nobody=True)]
    with CaptureQueriesContext(connection) as first:
        start_many([dataclasses.replace(entry("chan.a"), avoids_nobody=True), *others])
    with CaptureQueriesContext(connection) as again:
        start_many([entry("chan.b", languageCode="de"), *others])
    assert not any("ended_at >=" in query["sql"] for query in first.captured_queries)
    assert any("ended_at >=" in query["sql"] for query in again.captured_queries)


# Reachability: nobody is paired with a connection that is gone


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in_a_batch"])
def test_reach__a_closed_connection_of_this_process_is_skipped(alone):
    man = {"userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}}
    closed = start("chan.closed", man).user_id
    alive = start("chan.alive", man).user_id
    woman = {"userAttributes": {"gender": "female"}, "targetAttributes": {"gender": "male"}}
    others = [] if alone else [aside("chan.new")]
    result, *_ = start_many([entry("chan.new", woman), *others], closed_channels={"chan.closed"})
    assert dialog_of(result.user_id).first_id == alive
    assert user(closed).status == Status.WAITING  # its own leave (or the heartbeat) releases it


@ALONE_OR_IN_A_BATCH
def test_reach__a_user_of_a_dead_process_is_skipped(starter):
    dead = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=1, last_seen="2000-01-01T00:00Z")
    ghost = pool_user({}, channel_name="chan.ghost", process=dead)
    forgotten = pool_user({}, channel_name="chan.forgotten", process=None)  # its process was released
    result = starter("chan.new")
    assert dialog_of(result.user_id) is None
    assert user(ghost.pk).status == Status.WAITING and user(forgotten.pk).status == Status.WAITING


@ALONE_OR_IN_A_BATCH
def test_reach__a_user_of_another_live_process_is_paired(starter):
    other = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=1)
    processes.process_presence_hold(other)  # what the other process does at registration
    try:
        remote = pool_user({}, channel_name="chan.remote", process=other)
        result = starter("chan.new")
        assert dialog_of(result.user_id).first_id == remote.pk
    finally:
        processes.process_presence_release()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="presence locks are PostgreSQL's")
@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in_a_batch"])
def test_reach__the_candidate_read_brings_its_process_along(alone):
    # No second read of the processes: each candidate comes with its process's liveness (a
    # lone /start: the statement that pairs it asks).
    other = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=1)
    dead = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=2)  # no presence lock
    processes.process_presence_hold(other)
    try:
        pool_user({}, channel_name="chan.dead", process=dead)
        remote = pool_user({}, channel_name="chan.remote", process=other)
        me = this_process()
        entries = [entry("chan.new")] + ([] if alone else [aside("chan.new")])
        with CaptureQueriesContext(connection) as queries:
            result, *_ = dialogs_start(entries, process_id=me.pk)
        assert dialog_of(result.user_id).first_id == remote.pk
        reads = [q["sql"] for q in queries.captured_queries if "matching_serverprocess" in q["sql"]]
        assert len(reads) == 1 and ("wanted_by" not in reads[0]) is alone
    finally:
        processes.process_presence_release()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="presence locks are PostgreSQL's")
@ALONE_OR_IN_A_BATCH
def test_reach__a_process_without_its_presence_lock_is_dead_at_once(starter):
    # Fresh heartbeat, but the lock is gone with its connection: SIGKILLed on another host.
    other = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=1)
    pool_user({}, channel_name="chan.remote", process=other)
    assert other.pk not in processes.processes_alive()
    assert dialog_of(starter("chan.new").user_id) is None


def test_reach__a_stale_candidate_is_skipped(monkeypatch):
    # The selector's answer can be stale (another transaction, or a backend where
    # select_for_update does nothing): the candidate must still wait.
    a, b, _ = pair()
    c = start("chan.c").user_id
    waiting = PoolUser.objects.filter(status=Status.WAITING).order_by("created_at", "pk")
    monkeypatch.setattr(pool, "pool_candidates_many",
                        lambda wanted: lambda: [list(waiting.filter(language=u.language)[:n]) for u, n in wanted])
    result = start_in_a_batch("chan.d")
    assert dialog_of(result.user_id).first_id == c
    assert user(a).status == user(b).status == Status.PAIRED


@pytest.mark.parametrize("server_transaction", [
    False,
    # As a server runs it, outside any test transaction: on PostgreSQL the batch's
    # transaction is then its pipeline's own, and the further reads happen in it.
    pytest.param(True, marks=pytest.mark.django_db(transaction=True)),
])
def test_reach__past_a_short_read_the_pool_is_paged(monkeypatch, server_transaction):
    # The batch reads a few candidates per newcomer; when none of them can be paired, the
    # rest of the pool is still searched, oldest first.
    assert connection.in_atomic_block is not server_transaction
    monkeypatch.setattr(pool, "CANDIDATE_PAGE", 1)
    dead = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=1, last_seen="2000-01-01T00:00Z")
    for index in range(5):
        pool_user({}, channel_name=f"chan.ghost{index}", process=dead)
    alive = start("chan.alive").user_id
    later = start("chan.later", {"languageCode": "de"}).user_id  # another language: not a candidate
    result = start_in_a_batch("chan.new")
    assert dialog_of(result.user_id).first_id == alive
    assert user(later).status == Status.WAITING


# Leaving


def test_leave__a_waiting_user_is_gone():
    a = start("chan.a").user_id
    assert user_leave(channel_name="chan.a", reason="disconnect") == []
    assert user(a).status == Status.GONE and user(a).left_at is not None
    assert dialog_of(start("chan.b").user_id) is None  # nobody to pair with


@pytest.mark.parametrize("reason", ["disconnect", "timeout"])
def test_leave__in_a_dialog_ends_it(reason):
    a, b, dialog = pair()
    notices = user_leave(channel_name="chan.b", reason=reason)
    dialog.refresh_from_db()
    assert (dialog.status, dialog.end_reason, dialog.ended_by_id) == (Dialog.Status.ENDED, reason, b)
    assert dialog.ended_at is not None
    assert user(a).status == Status.ENDED and user(b).status == Status.ENDED
    assert [n.channel for n in notices] == ["chan.a", "chan.b"]
    notice = notices[0]
    assert notices[1].message is notice.message
    assert event_of(notice) == {"chatUUID": str(dialog.pk), "senderUUID": str(b), "eventCode": 30,
                                "serviceContent": {"reason": reason}, "content": None}


def test_leave__is_idempotent():
    pair()
    user_leave(channel_name="chan.a", reason="disconnect")
    before = snapshot()
    for channel in ("chan.a", "chan.b", "chan.nobody"):
        assert user_leave(channel_name=channel, reason="disconnect") == []
    assert snapshot() == before


def test_leave__of_a_row_left_claimed_by_an_earlier_version():
    legacy = pool_user({}, channel_name="chan.legacy", status=Status.CLAIMED, process=this_process())
    user_leave(channel_name="chan.legacy", reason="disconnect")
    assert user(legacy.pk).status == Status.GONE


# Cancelling


def test_cancel__of_a_waiting_user():
    a = start("chan.a").user_id
    cancelled = pool.pool_cancel(channel_name="chan.a")
    assert cancelled.pk == a
    assert user(a).status == Status.CANCELLED and user(a).left_at is not None
    assert dialog_of(start("chan.b").user_id) is None


def test_cancel__nothing_to_cancel():
    pair()
    before = snapshot()
    assert pool.pool_cancel(channel_name="chan.a") is None  # in a dialog: /stop ends it instead
    assert pool.pool_cancel(channel_name="chan.nobody") is None
    assert snapshot() == before


# Releasing (dead processes, lost disconnects)


def test_release__ends_dialogs_and_leaves_the_pool():
    a, b, dialog = pair()
    w = start("chan.w").user_id
    notices = users_release(user_ids=[a, w, uuid.uuid4()], reason="disconnect")
    dialog.refresh_from_db()
    assert dialog.status == Dialog.Status.ENDED and dialog.ended_by_id == a
    assert user(w).status == Status.GONE
    assert [(n.channel, event_of(n)["serviceContent"]) for n in notices] == [
        ("chan.a", {"reason": "disconnect"}), ("chan.b", {"reason": "disconnect"})
    ]


# Invariants over a longer run


def test_pairing_run__each_user_in_at_most_one_dialog():
    ids = []
    for i in range(0, 30, 3):  # batches of three
        results = start_many([entry(f"chan.{j}", {"languageCode": ("en", "de")[j % 2]}) for j in range(i, i + 3)])
        ids += [r.user_id for r in results]
    assert Dialog.objects.count() == 14  # 15 per language: 7 pairs each, one waits
    for pk in ids:
        assert Dialog.objects.filter(Q(first=pk) | Q(second=pk)).count() <= 1
    assert not Dialog.objects.filter(first=F("second")).exists()
