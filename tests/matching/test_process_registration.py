"""randomchat.process.current_process: one row per process, however many connections ask at once."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from matching import processes
from matching.models import ServerProcess
from randomchat import process


@pytest.mark.django_db(transaction=True)
def test_connections_that_start_at_once_register_the_process_once(monkeypatch):
    calls = []
    register = processes.process_register

    def counting_register():
        calls.append(1)
        return register()

    monkeypatch.setattr(processes, "process_register", counting_register)

    async def many_at_once():
        results = await asyncio.gather(*(process.current_process() for _ in range(20)))
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:  # the heartbeat loop
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The registration ran on the database thread: its connection is closed there, or a
        # later test without database access finds it open (close_old_connections) and fails.
        await database_sync_to_async(connections.close_all)()
        return results

    results = asyncio.run(many_at_once())
    assert len(calls) == 1
    assert len({r.pk for r in results}) == 1
    assert ServerProcess.objects.count() == 1
