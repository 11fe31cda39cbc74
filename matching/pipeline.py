"""Statements that go out together: PostgreSQL's pipeline mode.

A pairing batch's first statements (the rematch look-up, the held check with its locks,
the insert, the candidate read) all have their parameters before any of them answers, and
so do its last (the update, the dialogs' insert). In psycopg's pipeline mode each group is
sent at once and answers in one round trip, where each statement used to wait for its
own: a batch's transaction went from nine round trips to two, and a lone /start's, whose
pair the database decides (dialogs.pairing), to one. The server still runs them one after
another, in order, each seeing what the ones before it wrote. On SQLite a statement costs
no round trip, and they simply run in turn.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import psycopg
from django.db import connection, transaction


@contextlib.contextmanager
def pipelined_atomic() -> Iterator[None]:
    """transaction.atomic(), with the statements of its block sent in flights: a statement
    waits for no answer until some result is read.

    On PostgreSQL the block is one pipeline, and its transaction is the protocol's own: every
    statement up to the pipeline's closing Sync runs in one implicit transaction, which the
    Sync commits, or rolls back if a statement failed (PostgreSQL's "Pipelining"; reading a
    result mid-way sends a Flush, which ends nothing). No BEGIN or COMMIT to send, and the
    last flight's round trip is the commit's. A block that raises sends ROLLBACK first.
    Inside a transaction already (a test's), the block is a savepoint, as atomic() makes it.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            yield
        return
    if connection.in_atomic_block:
        with transaction.atomic(), connection.wrap_database_errors, connection.connection.pipeline():
            yield
        return
    connection.cursor().close()  # connected, and health-checked as Django does before a statement
    raw = connection.connection
    assert raw.autocommit, "an implicit transaction needs a connection in autocommit mode"
    with connection.wrap_database_errors, raw.pipeline():
        try:
            yield
        except BaseException:
            with contextlib.suppress(psycopg.Error):  # a failed statement: the Sync rolls back anyway
                raw.execute("ROLLBACK")
            raise


class Rows:
    """The rows of a statement that has been sent; reading them waits for its answer (and
    for those of the statements sent before it). On SQLite they are read at once: a cursor
    there finds its rows as it steps through them, so a later statement of the batch (its
    insert) would change what a held check reads."""

    __slots__ = ("_cursor", "_rows")

    def __init__(self, sql: str, params) -> None:
        self._cursor = send(sql, params)
        self._rows: list[tuple] | None = None
        if connection.vendor != "postgresql" and not isinstance(self._cursor, _Collected):
            self.all()

    def all(self) -> list[tuple]:
        if self._rows is None:
            with connection.wrap_database_errors:
                self._rows = self._cursor.fetchall()
            self._cursor.close()
        return self._rows


def send(sql: str, params):
    """Execute a statement, or in a pipeline send it, or in a Flight's steps collect it; its
    cursor."""
    collected = _collecting.get()
    if collected is not None:
        statement = _Collected(sql, params)
        collected.append(statement)
        return statement
    cursor = connection.cursor()
    cursor.execute(sql, params)
    return cursor


class _Collected:
    """A statement of a Flight, and its rows once the flight has run."""

    __slots__ = ("sql", "params", "rows")

    def __init__(self, sql: str, params) -> None:
        self.sql, self.params = sql, params
        self.rows: list[tuple] | None = None

    def fetchall(self) -> list[tuple]:
        if self.rows is None:
            raise RuntimeError("a statement of a flight that has not run, or that returns no rows")
        return self.rows

    def close(self) -> None:
        pass


_collecting: contextvars.ContextVar[list[_Collected] | None] = contextvars.ContextVar("collecting", default=None)


class Flight:
    """One pipelined transaction on PostgreSQL whose statements are made by `steps`, a
    generator in which `send` and `Rows` collect them: what a step made goes out when it
    yields, and the server runs it while the next step is made. It runs on Django's
    connection (`run`, as pipelined_atomic()) or on an asyncio psycopg connection
    (`run_async`), where the event loop waits for the database itself, with no hand-over to
    the database thread and back (an idle pair's /start: dialogs.pairing.start_alone,
    randomchat.loop_database). `Rows` of a flight are read once it has run."""

    def __init__(self, steps: Iterator[None]) -> None:
        self._steps = steps
        self._statements: list[_Collected] = []

    def _made(self) -> Iterator[list[_Collected]]:
        """Run the steps in turn, each collecting its statements; after each, what it made."""
        made = True
        while made:
            first = len(self._statements)
            token = _collecting.set(self._statements)
            try:
                made = next(self._steps, _NO_MORE) is not _NO_MORE
            finally:
                _collecting.reset(token)
            yield self._statements[first:]

    def run(self) -> None:
        with pipelined_atomic():
            cursors = [send(statement.sql, statement.params) for made in self._made() for statement in made]
        with connection.wrap_database_errors:
            for statement, cursor in zip(self._statements, cursors):
                if cursor.description is not None:
                    statement.rows = cursor.fetchall()
                cursor.close()

    async def run_async(self, conn: psycopg.AsyncConnection) -> None:
        """On `conn` (autocommit), as pipelined_atomic() on Django's: one implicit
        transaction, which the pipeline's Sync commits; one that fails rolls back."""
        cursors = []
        async with conn.pipeline():
            try:
                for made in self._made():
                    for statement in made:
                        cursors.append(await conn.execute(statement.sql, statement.params))
            except BaseException:
                with contextlib.suppress(psycopg.Error):  # as pipelined_atomic(): not the Sync's commit
                    await conn.execute("ROLLBACK")
                raise
        for statement, cursor in zip(self._statements, cursors):
            if cursor.description is not None:
                statement.rows = await cursor.fetchall()


_NO_MORE = object()


def any_of(column: str, values: list) -> tuple[str, list]:
    """`column` is one of `values`: one array parameter on PostgreSQL (one text for any
    number of values, so that it is prepared once), a list of them on SQLite."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def prepared(field, value):
    """A value as `field`'s column takes it (psycopg adapts Python's values itself)."""
    return value if connection.vendor == "postgresql" else field.get_db_prep_save(value, connection)


@functools.cache
def _placeholder(field, vendor: str) -> str:
    # PostgreSQL binds a parameter whose type the statement does not say (a VALUES list) as text.
    return f"CAST(%s AS {field.cast_db_type(connection)})" if vendor == "postgresql" else "%s"


@functools.lru_cache(maxsize=512)
def _values(fields: tuple, rows: int, vendor: str) -> str:
    row = f"({', '.join(_placeholder(field, vendor) for field in fields)})"
    return f"(VALUES {', '.join([row] * rows)})"


def values(fields, instances) -> tuple[str, list]:
    """A VALUES list of the instances' values for `fields`' columns (its columns are named
    column1, column2, ... on both PostgreSQL and SQLite), and its parameters; psycopg adapts
    Python's values itself, SQLite takes them as Django stores them."""
    fields, vendor = tuple(fields), connection.vendor
    if vendor == "postgresql":
        params = [getattr(instance, field.attname) for instance in instances for field in fields]
    else:
        params = [field.get_db_prep_save(getattr(instance, field.attname), connection)
                  for instance in instances for field in fields]
    return _values(fields, len(instances), vendor), params
