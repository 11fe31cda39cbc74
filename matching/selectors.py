"""Queries over the pool."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from .models import PoolUser, ServerProcess
from .pipeline import Rows, any_of, prepared
from .processes import HELD_ELSEWHERE, PRESENCE_KEY

# The pairing rule (PROTOCOL.md §5; its oracle is tests/matching/oracle.py) as SQL over the
# pool's columns, the newcomer's values in braces: SQL's NULL does the rest, since a
# comparison with a null attribute is never true (a null attribute meets no non-null target).
RULE = (
    "status = 'waiting' AND language = {language}"
    # Their target accepts this user.
    " AND (target_gender IS NULL OR target_gender = {gender})"
    " AND (target_age_min IS NULL OR target_age_min <= {age})"
    " AND (target_age_max IS NULL OR target_age_max >= {age})"
    # This user's target accepts them.
    " AND ({target_gender} IS NULL OR gender = {target_gender})"
    " AND ({target_age_min} IS NULL OR age >= {target_age_min})"
    " AND ({target_age_max} IS NULL OR age <= {target_age_max})"
)
_RULE_VALUES = re.findall(r"{(\w+)}", RULE)
# The SQL type of each value (the others are text): a parameter alone, as in `%s IS NULL`,
# must say its type when the server binds it (settings: server_side_binding).
_VALUE_TYPES = {"age": "int", "target_age_min": "int", "target_age_max": "int"}
_RULE_BOUND = re.sub(r"{(\w+)}", lambda m: f"CAST(%s AS {_VALUE_TYPES.get(m[1], 'text')})", RULE)
_ORDER = "ORDER BY created_at, id"
_USER_ATTNAMES = [field.attname for field in PoolUser._meta.concrete_fields]
_CANDIDATE_COLUMNS = ", ".join(f"c.{field.column}" for field in PoolUser._meta.concrete_fields)


def _bound(user: PoolUser) -> tuple[str, list]:
    """RULE for `user`, its values as parameters."""
    return _RULE_BOUND, [getattr(user, name) for name in _RULE_VALUES]


def pool_candidates_for(user: PoolUser) -> QuerySet[PoolUser]:
    """Waiting users compatible with `user`, longest-waiting first, as one indexed query."""
    return (
        PoolUser.objects.filter(RawSQL(*_bound(user), output_field=BooleanField()))
        .exclude(pk=user.pk)
        .order_by("created_at", "pk")
    )


def pool_candidates_many(wanted: Sequence[tuple[PoolUser, int]]) -> Callable[[], list[list[PoolUser]]]:
    """For each (user, n): the first n of pool_candidates_for(user), with the user itself in
    its place if it is compatible with itself; locked, skipping rows another transaction
    holds. Returns the function that reads them: on PostgreSQL the statement is sent at
    once and read when asked (matching.pipeline), one for all (a LATERAL join over the
    users' values), and each row also carries its process (`process_hostname`,
    `process_pid`, `process_last_seen`, `process_present`: whether it holds its presence
    lock); on SQLite, where a statement costs no round trip, one each, read now."""
    table = PoolUser._meta.db_table
    if connection.vendor != "postgresql":
        found = [
            list(PoolUser.objects.raw(f"SELECT * FROM {table} WHERE {_RULE_BOUND} {_ORDER} LIMIT %s",
                                      [*_bound(user)[1], limit]))
            for user, limit in wanted
        ]
        return lambda: found
    columns = ["wanted_by", *dict.fromkeys(_RULE_VALUES), "wanted"]
    types = {"wanted_by": "int", **_VALUE_TYPES, "wanted": "int"}
    arrays = ", ".join(f"%s::{types.get(name, 'text')}[]" for name in columns)
    rule = RULE.format(**{name: f"w.{name}" for name in _RULE_VALUES})
    # Each candidate's process comes along (pairing asks whether it is alive): no second read.
    process = ServerProcess._meta.db_table
    sql = (f"SELECT {_CANDIDATE_COLUMNS}, w.wanted_by, p.hostname, p.pid, p.last_seen,"
           f" {HELD_ELSEWHERE.format(PRESENCE_KEY.format('p.id'))}"
           f" FROM unnest({arrays}) AS w({', '.join(columns)})"
           f" CROSS JOIN LATERAL (SELECT * FROM {table} WHERE {rule} {_ORDER} LIMIT w.wanted"
           f" FOR UPDATE SKIP LOCKED) AS c LEFT JOIN {process} AS p ON p.id = c.process_id")
    params = [
        [index if name == "wanted_by" else limit if name == "wanted" else getattr(user, name)
         for index, (user, limit) in enumerate(wanted)]
        for name in columns
    ]
    rows = Rows(sql, params)

    def read() -> list[list[PoolUser]]:
        found: list[list[PoolUser]] = [[] for _ in wanted]
        width = len(_USER_ATTNAMES)
        for row in rows.all():
            user = PoolUser.from_db(connection.alias, _USER_ATTNAMES, row[:width])
            wanted_by, user.process_hostname, user.process_pid, user.process_last_seen, user.process_present = row[width:]
            found[wanted_by].append(user)
        for users in found:  # a LATERAL join keeps each user's order in practice, not by the standard
            users.sort(key=lambda user: (user.created_at, user.pk))
        return found

    return read


def pool_partner(user: PoolUser, *, process_id, closed_channels: Collection[str], stale_before,
                 avoid: tuple[str, list] = ("", [])) -> tuple[str, list]:
    """The longest-waiting compatible user for `user` that a connection of this process
    (`process_id`) can be paired with, as the body of a CTE, and its parameters: pairing
    decided inside PostgreSQL (dialogs.pairing, a /start alone in its batch). What
    services.Reachable asks of each candidate, in SQL: a user of this process whose
    connection is not among `closed_channels`, or of a process that holds its presence lock
    and beat since `stale_before`; not one whose channel is among the rows of the SELECT
    `avoid` (no rematch); none unless `user` is stored (its connection held no other);
    locked, skipping rows another transaction holds."""
    table, process = PoolUser._meta.db_table, ServerProcess._meta.db_table
    rule, values = _bound(user)
    avoid_sql, avoid_params = avoid
    return (
        f"SELECT * FROM {table} AS c WHERE {rule} AND c.id <> %s"
        f" AND EXISTS (SELECT 1 FROM {table} AS n WHERE n.id = %s)"
        " AND (c.process_id = %s AND c.channel_name <> ALL(%s)"
        f" OR c.process_id IS DISTINCT FROM %s AND EXISTS (SELECT 1 FROM {process} AS p WHERE p.id = c.process_id"
        f" AND p.last_seen >= %s AND {HELD_ELSEWHERE.format(PRESENCE_KEY.format('p.id'))}))"
        f"{f' AND c.channel_name NOT IN ({avoid_sql})' if avoid_sql else ''}"
        f" {_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED",
        [*values, user.pk, user.pk, process_id, list(closed_channels), process_id, stale_before, *avoid_params],
    )


def pool_paired_by(users: Sequence[PoolUser], paired_at) -> tuple[str, list]:
    """SQL that is true when each of these users is paired at `paired_at`: a later statement
    of a pairing batch's transaction checks with it that the batch's update, sent without
    waiting for its answer, changed them all."""
    id_in, ids = any_of("id", [prepared(PoolUser._meta.pk, user.pk) for user in users])
    return (f"(SELECT count(*) FROM {PoolUser._meta.db_table} WHERE {id_in} AND status = %s AND paired_at = %s) = %s",
            [*ids, PoolUser.Status.PAIRED, prepared(PoolUser._meta.get_field("paired_at"), paired_at), len(users)])


def user_held_on(*, channel_name: str) -> bool:
    """Whether a connection holds a user: waiting, being paired or in a dialog."""
    return PoolUser.objects.filter(channel_name=channel_name, status__in=PoolUser.HELD).exists()
