"""The heart-beat monitor: one connection's timers, its decisions a pure function of times."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NamedTuple, Protocol

CONNECT_TIMEOUT = "connect_timeout"
HEARTBEAT_TIMEOUT = "heartbeat_timeout"
FRAME_TIMEOUT = "frame_timeout"
IDLE_TIMEOUT = "idle_timeout"


class Lapse(NamedTuple):
    """A limit the client let pass: `kind` is a bounded category, `reason` fixed text to log."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Deadlines:
    """A connected client's limits in seconds, 0 for none."""

    outgoing: float  # send an EOL when nothing went out for this long
    incoming: float  # the client promised something at least this often
    grace: float  # ... and is dropped after `incoming * grace` without
    frame: float  # a frame must arrive within this
    idle: float  # with heart-beats in off: silence allowed outside a session

    @classmethod
    def negotiated(cls, outgoing_ms: int, incoming_ms: int, *, grace: float, frame: float, idle: float) -> Deadlines:
        """The deadlines for heart-beats negotiated in ms; idling only matters without heart-beats in."""
        return cls(outgoing_ms / 1000, incoming_ms / 1000, grace, frame, 0 if incoming_ms else idle)

    @property
    def tick(self) -> float:
        """How often to look: half the shortest interval, so none is overshot by more than half; 0 when none."""
        return min((x / 2 for x in (self.outgoing, self.incoming, self.frame, self.idle) if x), default=0)


def lapsed(d: Deadlines, now: float, *, last_inbound: float, partial_since: float | None, idle_since: float) -> Lapse | None:
    """The first limit the client is past at `now`, if any; an idle one may be excused by a session."""
    if d.incoming and now - last_inbound > d.incoming * d.grace:
        return Lapse(HEARTBEAT_TIMEOUT, f"no heart-beat for {now - last_inbound:.1f}s")
    if d.frame and partial_since is not None and now - partial_since > d.frame:
        return Lapse(FRAME_TIMEOUT, f"Frame not completed within {d.frame:g} s")
    if d.idle and now - idle_since > d.idle:
        return Lapse(IDLE_TIMEOUT, f"nothing received for {now - last_inbound:.0f}s")
    return None


def beat_due(d: Deadlines, now: float, *, last_outbound: float) -> bool:
    """Whether an EOL must go out now so that the next tick is not too late for one."""
    return bool(d.outgoing) and now - last_outbound >= d.outgoing - d.tick


class Monitored(Protocol):
    """What the monitor needs of its connection."""

    closing: bool

    def partial_since(self) -> float | None: ...

    async def session_active(self) -> bool: ...

    async def send_heartbeat(self) -> None: ...

    async def time_out(self, lapse: Lapse) -> None: ...


class HeartbeatMonitor:
    """Runs one connection's timer: the connect timeout until CONNECT, then its deadlines.

    The connection stamps `last_inbound` and `last_outbound` with the loop's clock.
    """

    def __init__(self, connection: Monitored) -> None:
        self.connection = connection
        self.last_inbound = self.last_outbound = asyncio.get_running_loop().time()
        self.task: asyncio.Task | None = None

    def expect_connect(self, timeout: float) -> None:
        """Time the connection out unless `start()` comes within `timeout` seconds."""
        self._run(self._connect_timeout(timeout))

    def start(self, deadlines: Deadlines) -> None:
        """Keep the negotiated deadlines, instead of the connect timeout."""
        self._run(self._watch(deadlines))

    def stop(self) -> None:
        """Cancel the timer; idempotent."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def _run(self, coro) -> None:
        self.stop()
        self.task = asyncio.get_running_loop().create_task(coro)

    async def _connect_timeout(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if not self.connection.closing:
            await self.connection.time_out(Lapse(CONNECT_TIMEOUT, f"no CONNECT within {timeout:g}s"))

    async def _watch(self, d: Deadlines) -> None:
        tick = d.tick
        if not tick:
            return
        conn = self.connection
        loop = asyncio.get_running_loop()
        idle_checked = 0.0  # when session_active() last said yes
        while not conn.closing:
            await asyncio.sleep(tick)
            now = loop.time()
            lapse = lapsed(
                d, now, last_inbound=self.last_inbound, partial_since=conn.partial_since(),
                idle_since=max(self.last_inbound, idle_checked),
            )
            if lapse is not None:
                if lapse.kind != IDLE_TIMEOUT or not await conn.session_active():
                    await conn.time_out(lapse)
                    return
                idle_checked = now
            if beat_due(d, now, last_outbound=self.last_outbound):
                self.last_outbound = now
                await conn.send_heartbeat()
