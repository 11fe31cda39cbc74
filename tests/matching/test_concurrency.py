"""Pairing services called from many threads at once, on the real database.

The consumers' part is played by worker threads: each pair.offer is confirmed, each
pair.retry retried and each pair.declined released, concurrently with new entries.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from dialogs.models import Dialog
from matching import services as pool
from matching.models import PoolUser

from tests.support.factories import request_of

CROWD = 200
WORKERS = 24  # below PostgreSQL's default max_connections, with room for other sessions


def _handle(notice) -> list:
    message = notice.message
    if message["type"] == "pair.offer":
        return pool.pair_confirm(claimed_id=message["claimed"], claimant_id=message["claimant"],
                                 channel_name=notice.channel).notices
    if message["type"] == "pair.retry":
        return pool.pair_retry(user_id=message["user"]).notices
    if message["type"] == "pair.declined":
        return pool.pair_release(claimant_id=message["claimant"]).notices
    return []  # chat events: nothing to do


def run_crowd(entries: list[tuple[str, dict]]) -> Counter:
    """Enter every (channel, body) at once and play the consumers until nothing is left to do."""
    work: queue.Queue = queue.Queue()
    events = Counter()
    errors: list[BaseException] = []
    pending = threading.Semaphore(0)
    lock = threading.Lock()
    outstanding = [0]

    def push(notices):
        with lock:
            outstanding[0] += len(notices)
        for n in notices:
            work.put(n)

    def enter(channel, data):
        try:
            push(pool.pool_enter(channel_name=channel, request=request_of(data)).notices)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def consume():
        try:
            while True:
                notice = work.get()
                if notice is None:
                    return
                try:
                    if notice.message["type"] == "chat.event":
                        with lock:
                            events[notice.message["code"]] += 1
                    push(_handle(notice))
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                finally:
                    with lock:
                        outstanding[0] -= 1
                        if outstanding[0] == 0:
                            pending.release()
        finally:
            connection.close()

    consumers = [threading.Thread(target=consume) for _ in range(WORKERS // 2)]
    for t in consumers:
        t.start()
    barrier = threading.Barrier(WORKERS // 2)

    def enter_at_once(batch):
        barrier.wait()
        for channel, data in batch:
            enter(channel, data)

    batches = [entries[i:: WORKERS // 2] for i in range(WORKERS // 2)]
    with ThreadPoolExecutor(WORKERS // 2) as executor:
        list(executor.map(enter_at_once, batches))
    # Wait until every notice (and the notices they caused) has been handled.
    while True:
        with lock:
            if outstanding[0] == 0:
                break
        pending.acquire(timeout=1)
    for _ in consumers:
        work.put(None)
    for t in consumers:
        t.join()
    assert not errors, errors
    return events


@pytest.mark.django_db(transaction=True)
def test_crowd__two_hundred_enter_at_once__exactly_one_hundred_dialogs():
    events = run_crowd([(f"crowd.{i}", {}) for i in range(CROWD)])
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
def test_crowd__mixed_languages_and_targets__only_compatible_pairs():
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
    run_crowd(entries)
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
