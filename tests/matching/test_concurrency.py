"""Pairing batches written from many threads at once, on the real database.

Each worker thread plays one process's group commit: it enters its share of the crowd in
batches of a few /starts, or one at a time (on PostgreSQL, each paired inside the statement
that stores it: dialogs.pairing), concurrently with the others.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from dialogs.models import Dialog
from matching.models import PoolUser

from tests.support.factories import entry, start_many, this_process

CROWD = 200
WORKERS = 12  # below PostgreSQL's default max_connections, with room for other sessions
BATCHES = pytest.mark.parametrize("batch", [1, 5], ids=["alone", "in_batches"])


def run_crowd(entries: list[tuple[str, dict]], batch: int) -> Counter:
    """Enter every (channel, body) at once, in batches from WORKERS threads; count the events."""
    this_process()  # stored once, before the threads race to create it
    events = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(WORKERS)

    def enter_at_once(share):
        try:
            barrier.wait()
            for i in range(0, len(share), batch):
                for result in start_many([entry(channel, data) for channel, data in share[i:i + batch]]):
                    assert not isinstance(result, Exception), result
                    with lock:
                        events.update(n.message["code"] for n in result.notices)
        finally:
            connection.close()

    with ThreadPoolExecutor(WORKERS) as executor:
        list(executor.map(enter_at_once, [entries[i::WORKERS] for i in range(WORKERS)]))
    return events


@pytest.mark.django_db(transaction=True)
@BATCHES
def test_crowd__two_hundred_enter_at_once__exactly_one_hundred_dialogs(batch):
    events = run_crowd([(f"crowd.{i}", {}) for i in range(CROWD)], batch)
    assert Dialog.objects.count() == CROWD // 2
    per_user = Counter()
    for first, second in Dialog.objects.values_list("first_id", "second_id"):
        assert first != second
        per_user[first] += 1
        per_user[second] += 1
    assert len(per_user) == CROWD and set(per_user.values()) == {1}
    assert Counter(PoolUser.objects.values_list("status", flat=True)) == Counter({"paired": CROWD})
    assert events == Counter({10: CROWD})


@pytest.mark.django_db(transaction=True)
@BATCHES
def test_crowd__mixed_languages_and_targets__only_compatible_pairs(batch):
    from .strategies import reference_compatible

    shapes = [
        {"languageCode": "en"},
        {"languageCode": "de"},
        {"languageCode": "en", "userAttributes": {"gender": "male"}, "targetAttributes": {"gender": "female"}},
        {"languageCode": "en", "userAttributes": {"gender": "female"}, "targetAttributes": {"gender": "male"}},
    ]
    # 21 of the first shape, 20 of each other: one user is left without a partner.
    entries = [(f"mixed.{i}", shapes[i % len(shapes)]) for i in range(81)]
    body_of = dict(entries)
    run_crowd(entries, batch)
    users = {u.pk: u for u in PoolUser.objects.all()}
    paired = set()
    for first, second in Dialog.objects.values_list("first_id", "second_id"):
        a, b = users[first], users[second]
        assert reference_compatible(body_of[a.channel_name], body_of[b.channel_name])
        paired |= {first, second}
    waiting = [u for u in users.values() if u.pk not in paired]
    assert all(u.status == "waiting" for u in waiting)
    # Nobody who waits could be paired with anybody else who waits.
    for i, a in enumerate(waiting):
        for b in waiting[i + 1:]:
            assert not reference_compatible(body_of[a.channel_name], body_of[b.channel_name])
    assert len(paired) == 80 and [body_of[u.channel_name] for u in waiting] == [shapes[0]]
