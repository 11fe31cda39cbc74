"""The indexes that every /start's insert and every pairing's update write: only those a
query reads, so that a pair does not pay for the rest (matching.models, dialogs.models)."""

import pytest
from django.db import connection

from dialogs.models import Dialog
from matching.models import PoolUser

pytestmark = pytest.mark.django_db


def _indexes(model) -> dict[str, dict]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {name: c for name, c in found.items() if c["index"] and not c["primary_key"]}


def test_the_pool_keeps_its_read_indexes_and_no_others():
    indexes = _indexes(PoolUser)
    assert sorted(tuple(c["columns"]) for c in indexes.values()) == sorted([
        ("language", "created_at"), ("status", "created_at"), ("detached_at",), ("channel_name",),
        ("channel_name",), ("claimed_by_id",), ("resume_selector",), ("created_at",), ("process_id",),
    ]), sorted(indexes)  # channel_name twice: one_held_user_per_connection and pool_channel_idx


def test_a_connection_still_holds_one_user_at_most():
    held = _indexes(PoolUser)["one_held_user_per_connection"]
    assert held["unique"] and held["columns"] == ["channel_name"]
    assert _indexes(PoolUser)["one_user_per_resume_selector"]["unique"]


def test_a_new_dialog_writes_no_index_of_its_end():
    indexes = _indexes(Dialog)
    assert sorted(tuple(c["columns"]) for c in indexes.values()) == sorted([
        ("status", "started_at"), ("started_at",), ("first_id",), ("second_id",), ("ended_at",), ("ended_by_id",),
    ]), sorted(indexes)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the LIKE indexes and partial predicates are PostgreSQL's")
def test_on_postgresql_the_indexes_of_nullable_columns_leave_out_nulls_and_no_like_index_is_made():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN (%s, %s)",
                       [PoolUser._meta.db_table, Dialog._meta.db_table])
        definitions = dict(cursor.fetchall())
    assert not [name for name in definitions if name.endswith("_like")]
    # The constraint the migration takes down and puts back around channel_name's change.
    assert "WHERE ((status)::text = ANY" in definitions["one_held_user_per_connection"]
    for name in ("pool_claimed_by_idx", "one_user_per_resume_selector", "dialog_ended_idx", "dialog_ended_by_idx"):
        assert definitions[name].endswith("IS NOT NULL)"), definitions[name]
