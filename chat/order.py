"""Puts a dialog's events back in the order the server accepted them. Pure.

Every event of a dialog after its 10 carries `seq`, taken under the dialog's lock in the
transaction that stored it, and goes to both participants. The notices of one commit may
travel slower than those of the next (a sender's task wakes a loop step after its batch
commits; another process's channel-layer send takes longer), so a connection sends by
`seq`: an event that comes early waits for the ones before it, and what the connection
answers by itself (receipts, refusals) waits behind them, so that a client sees its own
frames answered in the order it sent them.
"""

from __future__ import annotations


class DialogOrder:
    """One connection's outbound order; the items are opaque to it."""

    __slots__ = ("next_seq", "held", "after", "behind")

    def __init__(self) -> None:
        self.next_seq = 1
        self.held: dict[int, object] = {}  # early events, by seq
        self.after: dict[int, list] = {}  # items that must follow the event with that seq
        self.behind: list = []  # items that must follow everything waiting now

    @property
    def waiting(self) -> bool:
        return bool(self.held or self.after)

    @property
    def last_sent(self) -> int:
        """The seq of the latest event let go; the ones after it wait or have not come."""
        return self.next_seq - 1

    def begin(self, first_seq: int = 1) -> list:
        """A new dialog, whose first event after the 10 has seq 1 (or, for a connection that
        resumes one, `first_seq`): what still waits of the last one goes out first."""
        ready = self.skip_gap()
        self.next_seq = first_seq
        return ready

    def push(self, seq: int, item) -> list:
        """The items now ready to send, in order; an early event is held, a repeat dropped."""
        if seq < self.next_seq:
            return []
        self.held[seq] = item
        return self._ready()

    def push_after(self, seq: int, item) -> list:
        """An item that must follow the event `seq` (a refusal because the dialog ended there)."""
        if seq < self.next_seq:
            return self.push_unordered(item)
        self.after.setdefault(seq, []).append(item)
        return []

    def push_unordered(self, item) -> list:
        """An item outside the dialog's sequence: it goes out behind whatever waits."""
        if self.waiting:
            self.behind.append(item)
            return []
        return [item]

    def missing(self) -> tuple[int, int] | None:
        """The first and last seq that something waits for, when anything does."""
        if not self.waiting:
            return None
        return self.next_seq, max(self.held.keys() | self.after.keys())

    def skip_gap(self) -> list:
        """Give up on the missing events (a notice lost with a dead process): all that waits goes."""
        ready = []
        for seq in sorted(self.held.keys() | self.after.keys()):
            if seq in self.held:
                ready.append(self.held.pop(seq))
            ready += self.after.pop(seq, [])
            self.next_seq = seq + 1
        return ready + self._ready()

    def _ready(self) -> list:
        ready = []
        while self.next_seq in self.held:
            ready.append(self.held.pop(self.next_seq))
            ready += self.after.pop(self.next_seq, [])
            self.next_seq += 1
        if not self.waiting and self.behind:
            ready += self.behind
            self.behind = []
        return ready
