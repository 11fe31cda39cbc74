"""matching.pipeline: a pairing batch outside any transaction, as a server runs it, is all or
nothing. On PostgreSQL its transaction is the pipeline's implicit one, which only the closing
Sync commits: these tests fail if a statement of the batch commits before the rest."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection

from dialogs import pairing
from dialogs.models import Dialog
from matching import pipeline, selectors
from matching.models import PoolUser
from tests.support.factories import dialog_of, entry, start, start_in_a_batch, this_process

pytestmark = pytest.mark.django_db(transaction=True)

Status = PoolUser.Status


@pytest.fixture
def outside_any_transaction(monkeypatch):
    """Check that the batch runs as on a server: not inside a test's transaction."""
    start_many = pairing.dialogs_start

    def checked(*args, **kwargs):
        assert not connection.in_atomic_block
        return start_many(*args, **kwargs)

    monkeypatch.setattr(pairing, "dialogs_start", checked)


def test_a_batch_that_fails_after_its_insert_stores_nothing(monkeypatch, outside_any_transaction):
    waiting = start("chan.waiting").user_id

    def broken(dialogs):
        raise RuntimeError("a bug after the pool's statements were sent")

    monkeypatch.setattr(pairing, "_dialogs_insert", broken)
    with pytest.raises(RuntimeError):
        start_in_a_batch("chan.new")
    assert not PoolUser.objects.filter(channel_name="chan.new").exists()
    assert PoolUser.objects.get(pk=waiting).status == Status.WAITING
    monkeypatch.undo()
    # The connection is fine afterwards, and the locks are gone: the next batch pairs.
    assert dialog_of(start("chan.next").user_id).first_id == waiting


def test_a_pair_the_update_missed_is_not_stored(monkeypatch, outside_any_transaction):
    # The dialogs' insert checks the update it did not wait for: a pair whose users are not
    # paired as the batch decided fails the insert, and the whole batch with it.
    waiting = start("chan.waiting").user_id
    paired_by = selectors.pool_paired_by
    monkeypatch.setattr(pairing, "pool_paired_by", lambda users, paired_at: paired_by(users[:1] * 3, paired_at))
    with pytest.raises(Exception):
        start_in_a_batch("chan.new")
    assert not PoolUser.objects.filter(channel_name="chan.new").exists()
    assert PoolUser.objects.get(pk=waiting).status == Status.WAITING
    assert not PoolUser.objects.filter(status=Status.PAIRED).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite pairs every batch in Python")
def test_a_lone_start_that_fails_after_its_pair_was_sent_stores_nothing(monkeypatch, outside_any_transaction):
    # Alone in its batch, the /start is paired by the statement that stores it: a failure
    # after that statement went out leaves neither user paired, nor the newcomer stored.
    waiting = start("chan.waiting").user_id
    sent, calls = pipeline.send, []

    def send_then_fail(sql, params):
        cursor = sent(sql, params)
        calls.append(sql)
        # Each of its two statements is collected, then sent: the fourth call sent the pair's.
        if len(calls) == 4:
            raise RuntimeError("a bug after the pair's statement was sent")
        return cursor

    monkeypatch.setattr(pipeline, "send", send_then_fail)
    with pytest.raises(RuntimeError):
        pairing.dialogs_start([entry("chan.new")], process_id=this_process().pk)
    assert calls[3].startswith("WITH partner")
    monkeypatch.undo()
    assert not PoolUser.objects.filter(channel_name="chan.new").exists()
    assert PoolUser.objects.get(pk=waiting).status == Status.WAITING
    assert dialog_of(start("chan.next").user_id).first_id == waiting


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite pairs every batch in Python")
def test_a_lone_pair_the_update_missed_is_not_stored(monkeypatch, outside_any_transaction):
    # The statement that pairs a lone /start stores the dialog only if its update marked both
    # users paired: else the dialog's id is NULL, and the whole transaction fails.
    waiting = start("chan.waiting").user_id
    monkeypatch.setattr(pairing, "Status", SimpleNamespace(PAIRED=Status.PAIRED, WAITING="nobody"))
    with pytest.raises(Exception):
        start("chan.new")
    monkeypatch.undo()
    assert not PoolUser.objects.filter(channel_name="chan.new").exists()
    assert PoolUser.objects.get(pk=waiting).status == Status.WAITING
    assert not Dialog.objects.exists()
