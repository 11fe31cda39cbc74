"""Fixtures every folder uses: in-process clients, live daphne servers, an admin login."""

from __future__ import annotations

import pytest

# Assertions inside the shared helpers get pytest's explanations too.
pytest.register_assert_rewrite("tests.support")

from channels.db import database_sync_to_async  # noqa: E402
from channels.layers import channel_layers, get_channel_layer  # noqa: E402
from django.db import connections  # noqa: E402

from django.conf import settings  # noqa: E402

from randomchat import loop_database  # noqa: E402
from randomchat.asgi import application  # noqa: E402
from tests.support.inprocess import StompClient  # noqa: E402
from tests.support.live import SERVERS_KEY, DaphneServer, watch  # noqa: E402


# The consumers of this process (in-process clients) do not LISTEN for the 10s that ride on
# a pairing's commit (randomchat.pair_notify): each test's event loop would leave a
# listening database connection behind. The live servers, daphne processes, keep the default.
settings.RANDOMCHAT_PAIR_NOTIFY = False


@pytest.fixture
def admin_client(client, django_user_model):
    """pytest-django's admin_client, without hashing a password (that costs a second per test)."""
    admin = django_user_model.objects.create_superuser("admin", email="admin@example.com", password=None)
    client.force_login(admin)
    return client


# In-process clients


@pytest.fixture
async def layer():
    """The channel layer, built in this test's event loop (the in-memory one starts empty)."""
    channel_layers.backends.clear()
    layer = get_channel_layer()
    yield layer
    await layer.flush()
    if hasattr(layer, "close_pools"):
        await layer.close_pools()
    channel_layers.backends.clear()


@pytest.fixture
async def stomp(transactional_db, layer):
    """`await stomp()` -> an open StompClient on /connect; connect=True CONNECTs, ready=True also SUBSCRIBEs.

    The consumers reach the database from worker threads, so this brings the transactional
    database with it. Every client is disconnected at teardown.
    """
    clients: list[StompClient] = []

    async def make(*, subprotocols=("v12.stomp",), path="/connect", headers=None, app=application,
                   connect=False, ready=False, **connect_args) -> StompClient:
        client = StompClient(app, path, subprotocols=subprotocols, headers=headers)
        clients.append(client)
        await client.open()
        if ready:
            return await client.ready()
        if connect:
            await client.connect(**connect_args)
        return client

    yield make
    for client in clients:
        await client.close()
    # With persistent connections, asgiref's worker thread's connection would outlive the test
    # database; so would this loop's own (a lone /start's on PostgreSQL).
    await database_sync_to_async(connections.close_all)()
    await loop_database.close()


@pytest.fixture
def chat(stomp):
    """`await chat()` -> a CONNECTed StompClient SUBSCRIBEd to /user/dialog."""

    async def make() -> StompClient:
        return await stomp(ready=True)

    return make


# Live servers


@pytest.fixture
def start_daphne(request, transactional_db):
    """`start_daphne(env=...)` -> a started DaphneServer on the test database, stopped after the test.

    A live daphne sees committed rows only, hence the transactional database. The test
    fails if a server died during it.
    """
    started: list[DaphneServer] = []

    def start(**kwargs) -> DaphneServer:
        server = DaphneServer(**kwargs)
        started.append(server)
        server.start()
        watch(request, server)
        return server

    yield start
    died = [server for server in started if not server.running]
    for server in started:
        server.stop()
    try:
        assert not died, "".join(
            f"daphne on port {server.port} died during the test (exit code {server.returncode}):\n{server.log()}\n"
            for server in died
        )
    finally:
        for server in started:
            server.remove_log()


@pytest.fixture
def daphne_server(start_daphne) -> DaphneServer:
    """A fresh daphne with the default settings, for this test only.

    One per test: the flush after a transactional test deletes rows a running server relies
    on (its process registration), which no production server sees.
    """
    return start_daphne()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and report.when in ("call", "teardown"):
        for server, offset in item.stash.get(SERVERS_KEY, []):
            report.sections.append(
                (f"daphne on port {server.port} ({server.log_path})", server.log(since=offset) or "(no output)")
            )
    return report


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, and before it is dropped, the presence lock a consumer test's
    process took on PostgreSQL, and every other connection to it: the heartbeat's database
    calls run on threads of asgiref's pool, whose persistent connections would make the DROP
    fail and leave the database behind."""
    yield
    from django.db import connection

    from matching.processes import process_presence_release

    process_presence_release()
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
