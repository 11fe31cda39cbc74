"""randomchat.pair_notify: a pair's 10 for a connection of another process rides on the
pairing's commit as a NOTIFY (never on a rollback) when that process listens, and through
the layer when it does not; a process that lost what was sent to it gets it again."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import urllib.request

import psycopg
import pytest
from channels.layers import get_channel_layer
from django.db import connection
from psycopg import sql

from matching.pipeline import pipelined_atomic
from dialogs.pairing import dialogs_start, paired_message, partner_card, tell_pairs
from matching import processes
from matching.models import PoolUser, ServerProcess
from randomchat.pair_notify import CLIENT_OF, LISTEN_KEY, LISTENER_NAME, conninfo, deliver, notified
from tests.support.factories import aside, dialog_of, entry, make_dialog, make_user, pool_user, this_process
from tests.support.events import PAIRED, start_body
from tests.support.wire import WireClient, close_all, start_stored

from . import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]

LISTENING, SILENT = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"  # other processes


def connect() -> psycopg.Connection:
    return psycopg.connect(**conninfo(), autocommit=True)


def test_a_10_rides_on_the_commit_to_a_process_that_listens(settings, services_ready):
    settings.RANDOMCHAT_PAIR_NOTIFY = True
    layer = get_channel_layer()
    # Three new users, each paired with a user of another process: one that listens, one that
    # does not, and one of this process (its 10 is the layer's).
    partners = [make_user(channel=f"specific.{LISTENING}!a", status=PoolUser.Status.PAIRED),
                make_user(channel=f"specific.{SILENT}!b", status=PoolUser.Status.PAIRED),
                make_user(channel=f"specific.{layer.client_prefix}!c", status=PoolUser.Status.PAIRED)]
    newcomers = [make_user(status=PoolUser.Status.PAIRED, name=f"Zoe {i}") for i in range(3)]
    dialogs = [make_dialog(partner, newcomer) for partner, newcomer in zip(partners, newcomers)]
    with connect() as listener, connect() as silent:
        for prefix, conn in ((LISTENING, listener), (SILENT, silent)):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(layer.notify_channel(prefix))))
        listener.execute("SELECT pg_advisory_lock(%s)", [layer.listen_key(LISTENING)])  # SILENT takes no lock

        with pytest.raises(RuntimeError), pipelined_atomic():
            tell_pairs(notified, dialogs)
            raise RuntimeError("the pairing batch fails after its statements were sent")
        assert list(listener.notifies(timeout=0.3)) == []

        with pipelined_atomic():
            ridden = tell_pairs(notified, dialogs)
        assert ridden() == {partners[0].channel_name}
        got = list(listener.notifies(timeout=0.5))
        assert list(silent.notifies(timeout=0.3)) == []
    assert [n.channel for n in got] == [layer.notify_channel(LISTENING)]
    # What the listening process delivers: the very 10 the pairing process would have sent.
    delivered = []
    layer.deliver_notified = lambda channel, message: delivered.append((channel, message))
    deliver(layer, got[0].payload)
    ten = paired_message(dialogs[0].pk, partners[0].pk, partner_card(newcomers[0]))
    assert delivered == [(partners[0].channel_name, ten)]


def test_no_10_rides_to_a_process_of_the_previous_format_or_to_a_channel_of_no_process(settings, services_ready):
    # A listener of the previous version holds its own key (the first half of its prefix) and
    # reads another payload: its 10s go through Redis. A channel that is not a consumer's of
    # randomchat's layer names no process.
    settings.RANDOMCHAT_PAIR_NOTIFY = True
    layer = get_channel_layer()
    previous_version = "00112233445566778899aabbccddeeff"
    partners = [make_user(channel=channel, status=PoolUser.Status.PAIRED)
                for channel in (f"specific.{previous_version}!a", "chan.x", "specific.inmemory!x", "specific.zz!x")]
    dialogs = [make_dialog(partner, make_user(status=PoolUser.Status.PAIRED)) for partner in partners]
    with connect() as previous:
        previous.execute(sql.SQL("LISTEN {}").format(sql.Identifier(layer.notify_channel(previous_version))))
        previous.execute("SELECT pg_advisory_lock(%s)", [int(previous_version, 16) >> 65])
        with pipelined_atomic():
            ridden = tell_pairs(notified, dialogs)
        assert ridden() == set()
        assert list(previous.notifies(timeout=0.3)) == []


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in_a_batch"])
def test_a_pairing_tells_the_partners_process_as_it_commits(settings, services_ready, alone):
    # A lone /start's pairing statement carries the NOTIFY itself, a batch sends it over its
    # new dialogs: the partner's process gets its 10 as the pairing commits, and that notice
    # is not among the batch's; a /start that pairs with nobody tells nobody.
    settings.RANDOMCHAT_PAIR_NOTIFY = True
    layer = get_channel_layer()
    other = ServerProcess.objects.create(hostname="elsewhere.invalid", pid=1)
    processes.process_presence_hold(other)
    try:
        remote = pool_user({}, channel_name=f"specific.{LISTENING}!a", process=other)
        with connect() as listener:
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(layer.notify_channel(LISTENING))))
            listener.execute("SELECT pg_advisory_lock(%s)", [layer.listen_key(LISTENING)])

            def start(channel: str, data: dict | None = None):
                entries = [entry(channel, data)] + ([] if alone else [aside(channel)])
                return dialogs_start(entries, process_id=this_process().pk, notified=notified)[0]

            nobody = start(f"specific.{layer.client_prefix}!zz", {"languageCode": "zz"})
            assert nobody.notices == [] and list(listener.notifies(timeout=0.3)) == []
            paired = start(f"specific.{layer.client_prefix}!new")
            assert [n.channel for n in paired.notices] == [f"specific.{layer.client_prefix}!new"]
            got = list(listener.notifies(timeout=0.5))
    finally:
        processes.process_presence_release()
    dialog = dialog_of(paired.user_id)
    assert dialog.first_id == remote.pk
    delivered = []
    layer.deliver_notified = lambda channel, message: delivered.append((channel, message))
    for notify in got:
        deliver(layer, notify.payload)
    newcomer = PoolUser.objects.get(pk=paired.user_id)
    assert delivered == [(remote.channel_name, paired_message(dialog.pk, remote.pk, partner_card(newcomer)))]


def test_the_listen_key_in_sql_is_the_layers(services_ready):
    layer = get_channel_layer()
    channel = f"specific.{layer.client_prefix}!x"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {LISTEN_KEY.format(CLIENT_OF.format('%s'))}, {CLIENT_OF.format('%s')}",
                       [channel, "specific.inmemory!x"])
        assert cursor.fetchone() == (layer.listen_key(), None)


def metric(server, name: str) -> float:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as response:
        found = re.search(rf"^{name} (\S+)$", response.read().decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def listener_of(server) -> int | None:
    """The backend pid of the server's listening connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                       [f"{LISTENER_NAME} {server.process.pid}"])
        row = cursor.fetchone()
    return row and row[0]


def listen_lock(pid: int) -> int | None:
    """The advisory lock (the listen key) that backend holds."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
                       " WHERE pid = %s AND locktype = 'advisory' AND granted AND objsubid = 1", [pid])
        row = cursor.fetchone()
    return row and row[0]


def terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


async def listening(server) -> tuple[int, int]:
    """(The backend pid of the server's listening connection, its listen key) once it listens."""
    pid = await helpers.wait_db(lambda: listener_of(server), timeout=10, what=f"the LISTEN of {server}")
    return pid, await helpers.wait_db(lambda: listen_lock(pid), timeout=10, what="its listen lock")


@contextlib.asynccontextmanager
async def one_waits(cluster):
    """A user waits on p1, which listens; a newcomer's connection is open on p2."""
    p1, p2 = cluster(2)
    waiting, newcomer = WireClient(p1.ws_url, "waiting@p1"), WireClient(p2.ws_url, "newcomer@p2")
    try:
        await asyncio.gather(waiting.open(), newcomer.open())
        await start_stored(waiting, start_body("Waiting", "fi"))
        yield p1, waiting, newcomer, await listening(p1)
        await asyncio.sleep(0.5)  # then nothing else comes
        assert waiting.codes() == [PAIRED], waiting.describe()
    finally:
        await close_all([waiting, newcomer])


@pytest.mark.timeout(60)
async def test_a_cross_process_10_comes_with_the_commit(cluster):
    async with one_waits(cluster) as (p1, waiting, newcomer, _):
        await newcomer.start(start_body("Newcomer", "fi"))
        got = await waiting.wait_code(PAIRED, timeout=15)
        assert (await newcomer.wait_code(PAIRED, timeout=15)).chat == got.chat
    assert await helpers.in_thread(metric, p1, "randomchat_pairs_notified_total") == 1
    assert await helpers.in_thread(metric, p1, "randomchat_duplicate_events_total") == 0


@pytest.mark.timeout(60)
async def test_a_10_lost_with_the_listening_connection_comes_again(cluster):
    async with one_waits(cluster) as (p1, waiting, newcomer, (pid, key)):
        # p1 stands still and its listening connection ends; while its lock still looks held
        # (this test holds it), the pairing's NOTIFY reaches nobody.
        p1.process.send_signal(signal.SIGSTOP)
        try:
            await helpers.in_thread(terminate, pid)
            with await helpers.in_thread(connect) as holder:
                await helpers.in_thread(holder.execute, "SELECT pg_advisory_lock(%s)", [key])
                await newcomer.start(start_body("Newcomer", "fi"))
                ours = await newcomer.wait_code(PAIRED, timeout=15)
        finally:
            p1.process.send_signal(signal.SIGCONT)
        got = await waiting.wait_code(PAIRED, timeout=15)  # sent again once p1 listens anew
        assert got.chat == ours.chat
        assert (await listening(p1))[0] != pid
    assert await helpers.in_thread(metric, p1, "randomchat_pairs_notified_total") == 0
