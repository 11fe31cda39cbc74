"""The Redis channel layer: local events stay in the process, the rest cost one round trip.

It keeps channels-redis's data format (its key names, `self.serialize`, the full channel name
in `__asgi_channel__`), so processes running it and plain channels-redis understand each
other. What changes is how messages travel; channels-redis 4.3 spends 4 sequential round
trips on a send and ~4 more on a receive, which capped a process at ~500 events/s here.

- Local fast path. A message for a channel whose consumer runs in this process (on the
  sender's event loop) goes straight into that consumer's mailbox, without Redis. A channel
  is local from its consumer's first `receive()` until that receive is cancelled, which
  channels does only when the consumer stops. Nobody knows a channel's name before its
  consumer runs, so no send races the registration. Only consumers' channels ("specific."
  from `new_channel()`) count: the /healthz round trip uses its own prefix and must go
  through Redis, since Redis is what it checks.
- One reader per event loop. A task owned by the layer reads this process's Redis key
  (BZPOPMIN, then ZPOPMIN of up to `receive_batch` more, pipelined: one round trip) and
  puts each message into its channel's mailbox; consumers only await their mailbox.
  channels-redis instead has the consumer holding a process-wide lock read Redis for
  everyone, inside its own `receive()`, so a consumer that stops cancels a read done for
  others; its backup set (`$inflight`) exists to put such a message back. Here no
  consumer's cancellation touches Redis, and the reader itself is not cancelled: it stops
  after the read under way once its loop has no consumer left (only the loop's own end
  cancels it). So the backup set is not needed.
- A send to another process is one Lua script: drop expired messages, check capacity
  (ChannelFull), add, renew the key's expiry, as channels-redis's four commands did. The
  sends of one moment (a pairing batch's 10s, each from its own connection) share one
  pipeline per Redis connection.
- Redis down: the reader retries with backoff and logs once per outage, so consumers stay
  alive waiting on their mailboxes; a send raises, and `chat.notify` sends it again later.
  Nothing needs rebuilding afterwards, even if Redis restarted empty: events go to
  connections' own channels, never to groups kept in Redis.
- Memory: a message for a channel with no consumer here goes to Redis, where it expires.
  One the reader takes for a channel nobody receives from (a stopped consumer, or a
  one-off `receive()` still to come, as in tests) waits in `unclaimed` for `expiry`
  seconds, as long as it would have in Redis. channels does not cancel a receive that has
  already returned when its consumer stops (an event and the disconnect arrive together,
  or a handler raises), so a mailbox nobody has received from for `stale_after` seconds is
  dropped too. A mailbox holds at most the channel's capacity: a local send past it raises
  ChannelFull, and the reader drops what it cannot put (logged).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis.commands.core import AsyncScript

from chat.loops import settle, spawn
from chat.notify import LAYER_UNAVAILABLE, Backoff

logger = logging.getLogger(__name__)

CONSUMER_PREFIX = "specific."

# KEYS[1]: the channel's key; ARGV: score (the send time), expiry, capacity, message.
SEND_SCRIPT = AsyncScript(
    None,
    b"""
    redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, tonumber(ARGV[1]) - tonumber(ARGV[2]))
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
        return 0
    end
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 1
    """,
)


class Mailbox:
    """One local consumer's messages; its receive() waits on `waiter`."""

    __slots__ = ("messages", "waiter", "idle_since")

    def __init__(self) -> None:
        self.messages: collections.deque[dict] = collections.deque()
        self.waiter: asyncio.Future | None = None
        self.idle_since: float | None = None  # when its last receive() returned; None while one waits

    def put(self, message: dict, capacity: int) -> bool:
        if len(self.messages) >= capacity:
            return False
        self.messages.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        return True


class LoopChannels:
    """The local consumers of one event loop and the task reading their messages from Redis."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.reader: asyncio.Task | None = None


class RedisChannelLayer(BaseRedisChannelLayer):
    receive_batch = 100  # messages one read takes at most after the first
    block_seconds = 2  # BZPOPMIN's wait: under redis-py's default socket timeout (5 s)
    stale_after = 300.0  # s with no receive() before a mailbox's consumer counts as stopped
    redis_backoff = (0.1, 2.0)  # s: the first and the longest pause between tries while Redis is down

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loops: dict[asyncio.AbstractEventLoop, LoopChannels] = {}
        # What a reader took for channels nobody receives from (yet: a one-off receive() may
        # come, as in tests; or any more): (deadline, message), kept `expiry` s as in Redis.
        self.unclaimed: dict[str, collections.deque[tuple[float, dict]]] = {}
        self.last_score = 0.0
        # Sends to Redis waiting for the next pipeline, per event loop and connection index.
        self.sends: dict[tuple[asyncio.AbstractEventLoop, int], list] = {}
        # False from a failed Redis call until one succeeds: the chat then refuses its
        # actions with `unavailable` at once instead of waiting out a send's retries.
        self.available = True

    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        local = self.loops.get(asyncio.get_running_loop())
        mailbox = local.mailboxes.get(channel) if local else None
        if mailbox is None:
            await self.send_to_redis(channel, message)
            return
        # Copied, as a trip through Redis would: the sender may reuse its dict.
        if not mailbox.put(dict(message), self.get_capacity(channel)):
            raise ChannelFull()

    async def send_to_redis(self, channel, message):
        if "!" in channel:
            message = {**message, "__asgi_channel__": channel}
        key = self.non_local_name(channel)
        index = self.consistent_hash(key) if "!" in channel else next(self._send_index_generator)
        # The score orders a channel's messages: strictly increasing, so one sender's
        # messages keep their order even within the clock's resolution.
        self.last_score = score = max(time.time(), self.last_score + 1e-6)
        args = [score, int(self.expiry), self.get_capacity(channel), self.serialize(message)]
        loop = asyncio.get_running_loop()
        waiting = self.sends.setdefault((loop, index), [])
        if not waiting:
            spawn(self.send_waiting(loop, index))
        sent = loop.create_future()
        waiting.append((self.prefix + key, args, sent))
        try:
            if not await sent:
                raise ChannelFull()
        except LAYER_UNAVAILABLE:
            self.available = False
            raise
        self.available = True

    async def send_waiting(self, loop, index) -> None:
        """Send what every sender of this moment gave for one Redis connection: a batch of
        pairs' 10s (each its connection's own send) costs two round trips instead of one each."""
        sends = self.sends.pop((loop, index))
        try:
            if len(sends) == 1:
                [(key, args, _)] = sends
                results = [await SEND_SCRIPT(keys=[key], args=args, client=self.connection(index))]
            else:
                pipe = self.connection(index).pipeline(transaction=False)
                for key, args, _ in sends:
                    await SEND_SCRIPT(keys=[key], args=args, client=pipe)  # queued
                results = await pipe.execute(raise_on_error=False)  # after SCRIPT EXISTS
        except Exception as exc:  # noqa: BLE001 - each sender raises it
            results = [exc] * len(sends)
        settle([sent for _, _, sent in sends], results)

    async def receive(self, channel):
        if not (channel.startswith(CONSUMER_PREFIX) and "!" in channel):
            return await self.receive_through_redis(channel)
        assert self.non_local_name(channel).endswith(self.client_prefix + "!"), "Wrong client prefix"
        loop = asyncio.get_running_loop()
        local = self.loops.get(loop)
        if local is None:
            for closed in [other for other in self.loops if other.is_closed()]:
                del self.loops[closed]  # tests run one loop after another
            local = self.loops[loop] = LoopChannels()
        mailbox = local.mailboxes.get(channel)
        if mailbox is None:
            mailbox = local.mailboxes[channel] = Mailbox()
            now = time.time()
            mailbox.messages.extend(m for deadline, m in self.unclaimed.pop(channel, ()) if deadline > now)
            if local.reader is None:
                local.reader = loop.create_task(self.read(local))
        assert mailbox.waiter is None, "one receive() at a time on a consumer's channel"
        mailbox.idle_since = None
        while not mailbox.messages:
            mailbox.waiter = loop.create_future()
            try:
                await mailbox.waiter
            except asyncio.CancelledError:
                local.mailboxes.pop(channel, None)  # its consumer has stopped
                raise
            finally:
                mailbox.waiter = None
        mailbox.idle_since = loop.time()
        return mailbox.messages.popleft()

    async def read(self, local: LoopChannels) -> None:
        """Move this process's messages from Redis into the mailboxes while any is left.

        It stops after the read under way once no consumer is left, rather than being
        cancelled: a cancelled BZPOPMIN may already have taken a message from Redis."""
        loop = asyncio.get_running_loop()
        channel = f"{CONSUMER_PREFIX}{self.client_prefix}!"
        key, index = self.prefix + channel, self.consistent_hash(channel)
        backoff, failing = Backoff(*self.redis_backoff), False
        next_sweep = loop.time() + self.expiry
        try:
            while local.mailboxes:
                try:
                    # One round trip: Redis runs the ZPOPMIN once the BZPOPMIN has returned.
                    pipe = self.connection(index).pipeline(transaction=False)
                    pipe.bzpopmin(key, timeout=self.block_seconds).zpopmin(key, self.receive_batch)
                    popped, more = await pipe.execute()
                    # `more` may hold messages that came just after the BZPOPMIN timed out.
                    first = [] if popped is None else [popped[1]]
                    self.deliver(local, first + [member for member, _ in more])
                except Exception as exc:  # noqa: BLE001 - the reader must outlive any failure
                    if not local.mailboxes:
                        break  # nobody is waiting (the pools may have been closed for good)
                    self.available = False
                    if not failing:
                        logger.warning(
                            "event=layer_unavailable reader error=%s", type(exc).__name__,
                            exc_info=not isinstance(exc, LAYER_UNAVAILABLE),
                        )
                        failing = True
                    await asyncio.sleep(backoff.next())
                    continue
                self.available = True
                if failing:
                    logger.info("event=layer_available reader")
                    failing = False
                    backoff.reset()
                if loop.time() >= next_sweep:
                    self.sweep(local, loop.time())
                    next_sweep = loop.time() + self.expiry
        finally:
            if self.loops.get(loop) is local:
                del self.loops[loop]

    def deliver(self, local: LoopChannels, members: list[bytes]) -> None:
        for member in members:
            try:
                message = self.deserialize(member)
                targets = message.pop("__asgi_channel__")
            except Exception:  # noqa: BLE001 - one bad message must not cost the rest of the batch
                logger.exception("event=layer_message_unreadable")
                continue
            targets = targets if isinstance(targets, list) else [targets]  # a list from group_send
            for channel in targets:
                self.put(local, channel, message if len(targets) == 1 else dict(message))

    def put(self, local: LoopChannels, channel: str, message: dict) -> None:
        """Into the channel's mailbox, or kept for its consumer until the layer's expiry."""
        capacity = self.get_capacity(channel)
        mailbox = local.mailboxes.get(channel)
        if mailbox is None:
            waiting = self.unclaimed.setdefault(channel, collections.deque(maxlen=capacity))
            waiting.append((time.time() + self.expiry, message))
        elif not mailbox.put(message, capacity):
            logger.warning("event=layer_message_dropped channel=%s reason=over_capacity", channel)

    # Pairs notified (randomchat.pair_notify): a pair's 10 that a database transaction carries,
    # as a NOTIFY, to the process of its consumer, instead of the layer.

    def notify_channel(self, client_prefix: str | None = None) -> str:
        """The NOTIFY channel of the process whose layer has `client_prefix` (this one's by default)."""
        return f"{self.prefix}.{client_prefix or self.client_prefix}"

    def listen_key(self, client_prefix: str | None = None) -> int:
        """The advisory lock that process holds while it listens: 63 bits of the second half of
        its random prefix (LISTEN_KEY in SQL). The first half was the key of the previous NOTIFY
        format (a serialized layer message): a process of that version holds another key, and
        its 10s go through Redis, as it sends those of others."""
        return int((client_prefix or self.client_prefix)[16:32], 16) >> 1

    def deliver_notified(self, channel: str, message: dict) -> None:
        """A message a commit carried here, as the reader delivers what it takes from Redis."""
        local = self.loops.get(asyncio.get_running_loop())
        if local is not None:
            self.put(local, channel, message)

    def sweep(self, local: LoopChannels, now: float) -> None:
        """Forget consumers silent for `stale_after` and unclaimed messages past their expiry."""
        for channel, mailbox in list(local.mailboxes.items()):
            if mailbox.idle_since is not None and now - mailbox.idle_since > self.stale_after:
                del local.mailboxes[channel]
                # A consumer stuck that long in one handler may still come back for them.
                if mailbox.messages:
                    waiting = self.unclaimed.setdefault(channel, collections.deque(maxlen=self.get_capacity(channel)))
                    waiting.extend((time.time() + self.expiry, message) for message in mailbox.messages)
        wall = time.time()
        for channel, waiting in list(self.unclaimed.items()):
            while waiting and waiting[0][0] <= wall:
                waiting.popleft()
            if not waiting:
                self.unclaimed.pop(channel, None)

    async def receive_through_redis(self, channel):
        """channels-redis's receive, which waits for Redis instead of raising while it is down."""
        backoff = Backoff(*self.redis_backoff)
        while True:
            try:
                return await super().receive(channel)
            except LAYER_UNAVAILABLE as exc:
                if backoff.delay == backoff.first:
                    logger.warning("event=layer_unavailable channel=%s error=%s", channel, type(exc).__name__)
                await asyncio.sleep(backoff.next())
