"""A process killed with SIGKILL: no ghost partners, and its users' partners are told.

Process 1 holds W waiting users (men looking for a woman: they cannot pair with each
other) and D users in dialogs with partners E on process 2; process 2 also holds a
control dialog that must not notice anything. Process 1 is killed with SIGKILL; one second
later a woman looking for a man (compatible with every W) arrives on process 2. She must
never be paired with a W: she waits until a live man arrives, and is paired with him.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import pytest

from tests.support.events import LEFT, MESSAGE, PAIRED, start_body
from tests.support.wire import WireClient, close_all, pair, start_stored

from . import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]

WAITING = 5
DIALOGS = 3
W_BODY = dict(gender="male", target_gender="female")
NEWCOMER_BODY = dict(gender="female", target_gender="male")


@dataclass
class Scene:
    p1: object
    p2: object
    waiting: list[WireClient]  # on p1
    inside: list[WireClient]  # on p1, each in a dialog with the partner of the same index
    partners: list[WireClient]  # on p2
    control: list[WireClient]  # a dialog inside p2
    newcomer: WireClient  # on p2, opened, not started
    late: WireClient  # on p2, opened, not started
    w_users: list[str] = field(default_factory=list)  # the W users' ids

    @property
    def clients(self) -> list[WireClient]:
        return [*self.waiting, *self.inside, *self.partners, *self.control, self.newcomer, self.late]


@contextlib.asynccontextmanager
async def scene_on(p1, p2):
    """The scene below, built on p1 and p2; its clients are closed at the end, whatever happened."""
    scene = Scene(
        p1=p1,
        p2=p2,
        waiting=[WireClient(p1.ws_url, f"W{i}@p1") for i in range(WAITING)],
        inside=[WireClient(p1.ws_url, f"D{i}@p1") for i in range(DIALOGS)],
        partners=[WireClient(p2.ws_url, f"E{i}@p2") for i in range(DIALOGS)],
        control=[WireClient(p2.ws_url, "C1@p2"), WireClient(p2.ws_url, "C2@p2")],
        newcomer=WireClient(p2.ws_url, "N@p2"),
        late=WireClient(p2.ws_url, "N2@p2"),
    )
    try:
        await build(scene)
        yield scene
    finally:
        await close_all(scene.clients)


async def build(scene: Scene) -> None:
    p1, p2 = scene.p1, scene.p2
    await asyncio.gather(*(c.open() for c in scene.clients))
    for i, w in enumerate(scene.waiting):
        await start_stored(w, start_body(f"W{i}", "de", **W_BODY))
    for i, (d, e) in enumerate(zip(scene.inside, scene.partners)):
        await pair(d, e, start_body(f"D{i}", "fr"), start_body(f"E{i}", "fr"))
    await pair(scene.control[0], scene.control[1], start_body("C1", "it"), start_body("C2", "it"))

    # Everything is where the scene says, in the database too.
    scene.w_users = [await _waiting_user_id(w) for w in scene.waiting]
    held = await helpers.users(scene.w_users + [c.user for c in scene.inside + scene.partners])
    for user_id in scene.w_users:
        assert held[user_id].status == "waiting" and held[user_id].process.pid == p1.process.pid, held[user_id]
    for d in scene.inside:
        assert held[d.user].status == "paired" and held[d.user].process.pid == p1.process.pid
    for e in scene.partners:
        assert held[e.user].status == "paired" and held[e.user].process.pid == p2.process.pid


async def _waiting_user_id(client: WireClient) -> str:
    """A waiting client has no 10 yet, so its user id comes from the database (by name)."""
    name = client.label.split("@")[0]

    def lookup():
        from matching.models import PoolUser

        return str(PoolUser.objects.get(name=name, language="de").pk)

    return await helpers.in_thread(lookup)


def _still_waiting(user_ids) -> list[str]:
    from matching.models import PoolUser

    return [str(pk) for pk in PoolUser.objects.filter(pk__in=user_ids, status="waiting").values_list("pk", flat=True)]


def _mark_remote(pid: int) -> int:
    """Pretend the process runs on another host: only its stale heartbeat can show it is dead."""
    from matching.models import ServerProcess

    return ServerProcess.objects.filter(pid=pid).update(hostname="elsewhere.invalid")


async def assert_partners_told(scene: Scene, *, since: float, within: float, timings, label: str) -> None:
    """Every partner on p2 gets 30 'disconnect' from its dead partner within `within` s of `since`."""
    latencies = []
    for d, e in zip(scene.inside, scene.partners):
        remaining = max(0.1, since + within - time.monotonic())
        left = await e.wait_code(LEFT, timeout=remaining, start=0)
        assert (left.chat, left.sender, left.service) == (e.chat, d.user, {"reason": "disconnect"}), left
        latencies.append(left.at - since)
    timings(label, max(latencies))


async def assert_no_ghost_partner(scene: Scene, *, watch_until: float) -> None:
    """The newcomer stays unpaired until `watch_until`, then pairs with the live late man only."""
    while time.monotonic() < watch_until:
        assert PAIRED not in scene.newcomer.codes(), f"newcomer paired with a ghost: {scene.newcomer.describe()}"
        await asyncio.sleep(0.2)
    assert PAIRED not in scene.newcomer.codes(), f"newcomer paired with a ghost: {scene.newcomer.describe()}"
    await scene.late.start(start_body("N2", "de", gender="male", target_gender="female"))
    got = await scene.newcomer.wait_code(PAIRED, timeout=30)
    assert got.service["partner"]["name"] == "N2", got
    assert (await scene.late.wait_code(PAIRED, timeout=15)).chat == got.chat
    assert scene.newcomer.codes() == [PAIRED], scene.newcomer.describe()


async def assert_final_state(scene: Scene) -> None:
    # No W was ever in a dialog; every W has left the pool as gone.
    assert not await helpers.dialogs_with(scene.w_users)
    held = await helpers.users(scene.w_users)
    assert {u.status for u in held.values()} == {"gone"}, {str(k): u.status for k, u in held.items()}
    # The dialogs of the dead process ended with 'disconnect', by its user.
    for d, e in zip(scene.inside, scene.partners):
        [dialog] = await helpers.dialogs(pk=e.chat)
        assert (dialog.status, dialog.end_reason, str(dialog.ended_by_id)) == ("ended", "disconnect", d.user)
    # The control dialog on the live process noticed nothing and still works.
    c1, c2 = scene.control
    for client in scene.control:
        assert client.codes() == [PAIRED], client.describe()
    await c1.message("control still works")
    for client in scene.control:
        await client.wait_code(MESSAGE, timeout=15, content="control still works")
    assert all(c.is_open for c in [*scene.partners, *scene.control, scene.newcomer, scene.late])


async def newcomer_one_second_after(scene: Scene, killed_at: float) -> None:
    await asyncio.sleep(max(0.0, killed_at + 1.0 - time.monotonic()))
    await scene.newcomer.start(start_body("N", "de", **NEWCOMER_BODY))


@pytest.mark.parametrize("where", ["same-host", "other-host"])
@pytest.mark.timeout(120)
async def test_sigkill_heartbeat_releases_without_operator(cluster, timings, where):
    """RANDOMCHAT_PROCESS_HEARTBEAT=1, RANDOMCHAT_PROCESS_TIMEOUT=5: partners told within ~15 s.

    same-host: the live process also sees the dead pid. other-host: the dead process's row
    names another host, so only its stale heartbeat gives it away (the cross-host case).
    """
    p1, p2 = cluster(2, RANDOMCHAT_PROCESS_HEARTBEAT=1, RANDOMCHAT_PROCESS_TIMEOUT=5)
    async with scene_on(p1, p2) as scene:
        if where == "other-host":
            assert await helpers.in_thread(_mark_remote, p1.process.pid) == 1
        killed_at = helpers.sigkill(p1)
        await newcomer_one_second_after(scene, killed_at)
        await assert_partners_told(
            scene, since=killed_at, within=15, timings=timings, label=f"{where}: partners' 30 after SIGKILL"
        )
        # Past the release and a pair-confirm timeout (5 s) for any claim made before it.
        await assert_no_ghost_partner(scene, watch_until=max(time.monotonic() + 2, killed_at + 12))
        await assert_final_state(scene)


@pytest.mark.timeout(120)
async def test_sigkill_prune_pool_releases_at_once(cluster, timings):
    """Heartbeats too slow to matter (30 s / 60 s): `prune_pool` right after the kill does it."""
    p1, p2 = cluster(2, RANDOMCHAT_PROCESS_HEARTBEAT=30, RANDOMCHAT_PROCESS_TIMEOUT=60)
    async with scene_on(p1, p2) as scene:
        killed_at = helpers.sigkill(p1)
        output = await helpers.run_command("prune_pool")
        pruned_at = time.monotonic()
        timings("prune_pool run time", pruned_at - killed_at)
        assert "1 dead server process" in output, output
        await assert_partners_told(scene, since=pruned_at, within=3, timings=timings, label="partners' 30 after prune_pool returned")
        await newcomer_one_second_after(scene, killed_at)
        await assert_no_ghost_partner(scene, watch_until=time.monotonic() + 6)
        await assert_final_state(scene)


@pytest.mark.timeout(120)
async def test_sigkill_newcomer_before_anyone_noticed(cluster, timings):
    """Nothing has released the dead process yet (heartbeat 30 s): pairing's own check that a
    candidate's process is alive (its pid here; its presence lock on PostgreSQL, on any host)
    alone keeps the newcomer from its waiting users."""
    p1, p2 = cluster(2, RANDOMCHAT_PROCESS_HEARTBEAT=30, RANDOMCHAT_PROCESS_TIMEOUT=60)
    async with scene_on(p1, p2) as scene:
        killed_at = helpers.sigkill(p1)
        await newcomer_one_second_after(scene, killed_at)
        # The W users still wait, compatible with the newcomer: only the check kept them apart.
        waiting = await helpers.in_thread(_still_waiting, scene.w_users)
        assert len(waiting) == WAITING, "the dead process's users were released: nothing was tested"
        await assert_no_ghost_partner(scene, watch_until=time.monotonic() + 4)
        assert not await helpers.dialogs_with(scene.w_users)
        # Then an operator prunes: the partners are told at once.
        await helpers.run_command("prune_pool")
        await assert_partners_told(scene, since=time.monotonic(), within=3, timings=timings, label="partners' 30 after late prune_pool")
        await assert_final_state(scene)
