"""randomchat's ASGI application with the changes bench/README.md proposes, for measuring them.

Served as `daphne proposed_asgi:application` (bench/ on PYTHONPATH) next to the unchanged
`randomchat.asgi:application` in the same run. BENCH_PROPOSED picks the changes
(comma-separated; default both):

- pool: the consumer's database calls (randomchat.consumers.call and the disconnect's
  pool_leave) on the event loop's default thread pool (thread_sensitive=False), each thread
  with its own persistent connection, instead of all on one thread. The services are already
  safe to run concurrently: several processes do it (row locks, advisory locks). PostgreSQL
  only: SQLite has one writer, threads would only queue on its lock.
- nohealth: CONN_HEALTH_CHECKS off (PostgreSQL). With it on, Django checks the connection
  (SELECT 1) at the first query of every "request", and for channels every
  database_sync_to_async call is one, so every action pays an extra round trip. Without it, a
  connection broken by a database restart fails one action ("unavailable"), and Django
  replaces it at the next call (close_if_unusable_or_obsolete sees the error).
"""

from __future__ import annotations

import os

CHANGES = {c.strip() for c in os.environ.get("BENCH_PROPOSED", "pool,nohealth").split(",") if c.strip()}

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "randomchat.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

django.setup(set_prefix=False)

if "nohealth" in CHANGES:
    settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    from django.db import connections  # noqa: E402

    for conn in connections.all(initialized_only=True):
        conn.settings_dict["CONN_HEALTH_CHECKS"] = False
        conn.health_check_enabled = False

from randomchat.asgi import application  # noqa: E402,F401
from randomchat import consumers  # noqa: E402

if "pool" in CHANGES and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    from channels.db import DatabaseSyncToAsync

    consumers.database_sync_to_async = lambda func: DatabaseSyncToAsync(func, thread_sensitive=False)
