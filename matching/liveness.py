"""Which other processes have stopped beating, judged only on what this process saw. Pure.

A heartbeat older than the timeout proves nothing when the judge could not see the
database meanwhile: after a PostgreSQL outage every heartbeat is old, and the first process
back used to release all the others, live sockets and all. So a process counts another as
silent only when it has itself watched that heartbeat stay unchanged for the whole timeout,
beating its own all along; a failed beat of its own wipes what it saw.
"""

from __future__ import annotations


class HeartbeatWatch:
    """`observe()` after each of this process's own successful beats; `forget()` after a failed one."""

    __slots__ = ("timeout", "max_gap", "seen", "last_observed")

    def __init__(self, timeout: float, *, max_gap: float) -> None:
        self.timeout = timeout
        self.max_gap = max_gap  # observations further apart than this were no watch
        self.seen: dict[object, tuple[object, float]] = {}  # process id -> (its last_seen, since when)
        self.last_observed: float | None = None

    def forget(self) -> None:
        self.seen.clear()

    def observe(self, beats: dict, now: float) -> dict:
        """`beats` maps each other process to its last_seen now; returns the silent ones, with
        the last_seen that was watched (release them only if it is still that)."""
        if self.last_observed is not None and now - self.last_observed > self.max_gap:
            self.forget()  # a beat of its own that hung through an outage, or a stalled loop
        self.last_observed = now
        seen = {}
        for process, last_seen in beats.items():
            previous = self.seen.get(process)
            seen[process] = previous if previous is not None and previous[0] == last_seen else (last_seen, now)
        self.seen = seen
        return {process: last for process, (last, since) in seen.items() if now - since >= self.timeout}
