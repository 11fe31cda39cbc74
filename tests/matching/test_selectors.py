"""matching.selectors.pool_candidates_for and pool_candidates_many against the pairing rule of PROTOCOL.md §5."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.models import PoolUser
from matching.selectors import pool_candidates_for, pool_candidates_many

from tests.support.factories import pool_user
from .strategies import reference_compatible, start_bodies

Status = PoolUser.Status
# Mostly waiting users, and some in every other status, which are never candidates.
statuses = st.sampled_from([Status.WAITING] * 8 + list(Status))


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pool=st.lists(st.tuples(start_bodies(), statuses), min_size=1, max_size=16),
    newcomer=start_bodies(),
    newcomer_status=st.sampled_from([Status.WAITING, Status.PAIRING]),
    ages=st.permutations(range(16)),
)
def test_pool_candidates_for__exactly_compatible_waiting_users_oldest_first(pool, newcomer, newcomer_status, ages):
    now = timezone.now()
    with transaction.atomic():
        # Creation order differs from age order, so the ordering is the query's own.
        rows = [
            (pool_user(data, status=status, created_at=now - timedelta(minutes=age + 1)), data)
            for (data, status), age in zip(pool, ages)
        ]
        rows.append((pool_user(newcomer, status=newcomer_status, created_at=now), newcomer))
        oldest_first = sorted(rows, key=lambda rd: rd[0].created_at)
        # Every stored user in turn asks for its candidates: many pairs per example.
        for me, my_data in rows:
            expected = [
                row.pk
                for row, data in oldest_first
                if row.pk != me.pk and row.status == Status.WAITING and reference_compatible(my_data, data)
            ]
            assert [u.pk for u in pool_candidates_for(me)] == expected, (me, my_data)
        # All of them at once, as a pairing batch reads them: the first n each, oneself in
        # its place when compatible with oneself.
        wanted = [(me, 1 + index % 4) for index, (me, _) in enumerate(rows)]
        for (me, n), (_, my_data), read in zip(wanted, rows, pool_candidates_many(wanted)()):
            expected = [
                row.pk
                for row, data in oldest_first
                if row.status == Status.WAITING and reference_compatible(my_data, data)
            ]
            assert [u.pk for u in read] == expected[:n], (me, my_data, n)
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_pool_candidates_for__never_oneself():
    me = pool_user({"languageCode": "en"})
    assert list(pool_candidates_for(me)) == []
    other = pool_user({"languageCode": "en"})
    assert list(pool_candidates_for(me)) == [other]


@pytest.mark.django_db
def test_pool_candidates_for__null_attributes_meet_no_target():
    picky_gender = pool_user({"targetAttributes": {"gender": "female"}})
    picky_age = pool_user({"targetAttributes": {"age": {"min": 0}}})
    anyone = pool_user({})
    me = pool_user({})  # no gender, no age
    assert list(pool_candidates_for(me)) == [anyone]
    assert picky_gender not in pool_candidates_for(me) and picky_age not in pool_candidates_for(me)


@pytest.mark.django_db
def test_pool_candidates_for__language_is_case_insensitive():
    other = pool_user({"languageCode": "EN"})
    pool_user({"languageCode": "de"})
    me = pool_user({"languageCode": "en"})
    assert list(pool_candidates_for(me)) == [other]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("target_age", "ages_in"),
    [
        (30, [30]),
        ({"min": 18, "max": 30}, [18, 25, 30]),
        ({"min": 18}, [18, 25, 30, 31, 150]),
        ({"max": 30}, [0, 17, 18, 25, 30]),
    ],
)
def test_pool_candidates_for__target_ages_are_inclusive(target_age, ages_in):
    ages = [0, 17, 18, 25, 30, 31, 150]
    others = {age: pool_user({"userAttributes": {"age": age}}) for age in ages}
    me = pool_user({"targetAttributes": {"age": target_age}})
    assert [u.age for u in pool_candidates_for(me)] == ages_in
    # And the other way round: their targets, this user's age.
    for age in ages:
        newcomer = pool_user({"userAttributes": {"age": age}})
        assert (me in pool_candidates_for(newcomer)) is (age in ages_in)
        newcomer.delete()
