"""Django's PostgreSQL backend, with a health check that costs no round trip when it can.

With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before the first statement of every
database call (channels' `database_sync_to_async` marks each call a new "request"): one
round trip of an idle pair's nine. A connection whose server went away (a restart, a
crash, a terminated backend) has something to read: the server's termination notice, or
the end of the stream. So while the socket has nothing to read the connection is taken as
it is, and only a socket with news gets the real check, as PgBouncer trusts a connection
used within its `server_check_delay`. What a quiet socket cannot tell (a network that
drops packets silently) fails the call, which Django then marks: its next call checks.
"""

from __future__ import annotations

import os
import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if self.health_check_enabled and not self.health_check_done and quiet(self.connection):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def quiet(raw: psycopg.BaseConnection | None) -> bool:
    """Open, idle and nothing to read: nothing has happened to it since its last use. (poll,
    not select: a process with a thousand WebSockets has descriptors that select refuses.)"""
    if raw is None or raw.closed or raw.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN)
    return not poller.poll(0)


def own_connection_params(application: str, *, adapters: bool) -> dict:
    """psycopg's parameters for a connection a process keeps beside Django's (the listener's,
    the event loop's): Django's, less its cursor class and, without `adapters`, its adapters
    and prepared statements; named `<application> <pid>` for operators (pg_stat_activity)."""
    from django.db import connection

    dropped = ("cursor_factory",) if adapters else ("cursor_factory", "context", "prepare_threshold")
    params = {k: v for k, v in connection.get_connection_params().items() if k not in dropped}
    params["application_name"] = f"{application} {os.getpid()}"
    return params
