"""Database look-ups from async tests, and small helpers the scale-out tests share.

The ORM must not run on the event loop, so every look-up runs in a worker thread, which
closes its connection afterwards (nothing stays open to block the flush or the DROP of
the test database, and nothing outlives a PostgreSQL restart).
"""

from __future__ import annotations

import asyncio
import io
import signal
import time

from django.db import connections


async def in_thread(function, *args, **kwargs):
    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def _users(user_ids) -> dict:
    from matching.models import PoolUser

    return {
        str(u.pk): u
        for u in PoolUser.objects.select_related("process").filter(pk__in=[i for i in user_ids if i])
    }


async def users(user_ids) -> dict:
    """senderUUID -> PoolUser (with its process)."""
    return await in_thread(_users, list(user_ids))


def _dialogs(**filters) -> list:
    from dialogs.models import Dialog

    return list(Dialog.objects.filter(**filters))


async def dialogs(**filters) -> list:
    return await in_thread(_dialogs, **filters)


def _dialogs_with(user_ids) -> list:
    from django.db.models import Q

    from dialogs.models import Dialog

    return list(Dialog.objects.filter(Q(first_id__in=user_ids) | Q(second_id__in=user_ids)))


async def dialogs_with(user_ids) -> list:
    return await in_thread(_dialogs_with, list(user_ids))


def _message_counts(contents) -> dict[str, int]:
    from django.db.models import Count

    from dialogs.models import Message

    rows = Message.objects.filter(content__in=list(contents)).values("content").annotate(n=Count("id"))
    return {row["content"]: row["n"] for row in rows}


async def message_counts(contents) -> dict[str, int]:
    """content -> how many Message rows hold it (contents absent from the DB are left out)."""
    contents = list(contents)
    counts: dict[str, int] = {}
    for i in range(0, len(contents), 500):
        counts.update(await in_thread(_message_counts, contents[i : i + 500]))
    return counts


def _messages_in(dialog_ids) -> list[tuple[str, str]]:
    from dialogs.models import Message

    return [
        (str(author), content)
        for author, content in Message.objects.filter(dialog_id__in=list(dialog_ids)).values_list("author_id", "content")
    ]


async def messages_in(dialog_ids) -> list[tuple[str, str]]:
    """(author senderUUID, content) of every stored message of these dialogs."""
    return await in_thread(_messages_in, list(dialog_ids))


def _run_command(name: str, *args) -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


async def run_command(name: str, *args) -> str:
    """call_command in a worker thread (it sends its notices with async_to_sync)."""
    return await in_thread(_run_command, name, *args)


def sigkill(server) -> float:
    """SIGKILL a DaphneServer's process, reap it, return when (monotonic) it died."""
    process = server.process
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return time.monotonic()


async def wait_db(predicate, *, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate()` (run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await in_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
