"""Liveness: a process is released only after another watched it stay silent (issue: a
PostgreSQL outage longer than the timeout made live processes release each other)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dialogs import pairing
from matching import processes
from matching.liveness import HeartbeatWatch
from matching.models import PoolUser, ServerProcess

from tests.support.factories import pool_user

TIMEOUT, GAP = 20, 10


def test_a_heartbeat_unchanged_for_the_whole_timeout_is_silent():
    watch = HeartbeatWatch(TIMEOUT, max_gap=GAP)
    for t in range(0, 20, 5):
        assert watch.observe({"p": "beat-1"}, t) == {}
    assert watch.observe({"p": "beat-1"}, 20) == {"p": "beat-1"}


def test_a_process_that_beats_is_never_silent():
    watch = HeartbeatWatch(TIMEOUT, max_gap=GAP)
    for t in range(0, 100, 5):
        assert watch.observe({"p": f"beat-{t}"}, t) == {}


def test_an_old_heartbeat_seen_for_the_first_time_is_not_silent_yet():
    """The first process back after an outage sees every heartbeat old: that is no evidence."""
    watch = HeartbeatWatch(TIMEOUT, max_gap=GAP)
    assert watch.observe({"p": "long ago"}, 1000) == {}


def test_a_failed_beat_of_its_own_wipes_what_it_saw():
    watch = HeartbeatWatch(TIMEOUT, max_gap=GAP)
    watch.observe({"p": "beat-1"}, 0)
    watch.observe({"p": "beat-1"}, 10)
    watch.forget()
    assert watch.observe({"p": "beat-1"}, 15) == {}
    assert watch.observe({"p": "beat-1"}, 25) == {}
    assert watch.observe({"p": "beat-1"}, 35) == {"p": "beat-1"}


def test_observations_too_far_apart_start_over():
    """Its own beat hung through an outage: the time in between was not watched."""
    watch = HeartbeatWatch(TIMEOUT, max_gap=GAP)
    watch.observe({"p": "beat-1"}, 0)
    assert watch.observe({"p": "beat-1"}, 35) == {}
    assert watch.observe({"p": "beat-1"}, 45) == {}
    assert watch.observe({"p": "beat-1"}, 55) == {"p": "beat-1"}


def test_a_process_that_left_is_forgotten():
    watch = HeartbeatWatch(TIMEOUT, max_gap=GAP)
    watch.observe({"p": "beat-1", "q": "beat-1"}, 0)
    watch.observe({"q": "beat-2"}, 5)
    assert set(watch.seen) == {"q"}


@pytest.mark.django_db
def test_a_silent_process_that_beat_meanwhile_is_spared():
    other = ServerProcess.objects.create(hostname="elsewhere", pid=1)
    user = pool_user(process=other)
    judged_on = other.last_seen
    processes.process_beat(other)  # it beat after the judgment
    released, notices = pairing.process_release(silent={other.pk: judged_on})
    assert (released, notices) == ([], [])
    user.refresh_from_db()
    assert user.status == PoolUser.Status.WAITING
    assert ServerProcess.objects.filter(pk=other.pk).exists()


@pytest.mark.django_db
def test_a_silent_process_is_released_with_its_users():
    other = ServerProcess.objects.create(hostname="elsewhere", pid=1)
    user = pool_user(process=other)
    released, _ = pairing.process_release(silent={other.pk: other.last_seen})
    assert [p.pk for p in released] == [other.pk]
    user.refresh_from_db()
    assert user.status == PoolUser.Status.GONE
    assert not ServerProcess.objects.filter(pk=other.pk).exists()


@pytest.mark.django_db
def test_a_process_taken_for_dead_registers_again_and_tells_its_stranded_waiting_users():
    me = ServerProcess.objects.create(hostname="here", pid=1)
    since = me.last_seen
    waiting = pool_user(process=me, channel_name="live-channel")
    pairing.process_release(silent={me.pk: me.last_seen})  # another process judged it dead
    assert processes.process_beat(me) is True
    notices = processes.process_tell_stranded(live_channels={"live-channel", "other"}, since=since)
    assert [(n.channel, n.message["code"], n.message["chat"]) for n in notices] == [("live-channel", 30, None)]
    assert b'"reason":"timeout"' in notices[0].message["body"]
    assert processes.process_beat(me) is False
    waiting.refresh_from_db()
    assert waiting.status == PoolUser.Status.GONE


@pytest.mark.django_db
def test_prune_pool_still_judges_by_the_rows():
    stale = ServerProcess.objects.create(hostname="elsewhere", pid=1)
    ServerProcess.objects.filter(pk=stale.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    fresh = ServerProcess.objects.create(hostname="elsewhere", pid=2)
    assert [p.pk for p in processes.processes_dead()] == [stale.pk]
    assert fresh.pk not in [p.pk for p in processes.processes_dead()]
