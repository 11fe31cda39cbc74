"""ChatConsumer: the random chat's destinations and events on top of StompConsumer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from chat import events
from chat.events import Notice
from chat.notify import send_notices
from chat.order import DialogOrder
from chat.refusals import DATABASE_UNAVAILABLE, Refusal, unavailable
from chat.requests import DialogRequest, message_draft, parse_dialog_request, parse_resume, parse_start
from chat.tokens import ResumeToken
from dialogs.models import Dialog
from dialogs.pairing import dialogs_start, start_alone, user_leave
from dialogs.resume import participant_detach, participant_resume
from dialogs.services import dialog_end, dialog_events, dialog_owed, dialog_stop, messages_store
from matching.selectors import user_held_on
from matching.services import Entry, pool_cancel
from moderation.address import address_hash, client_address
from moderation.services import address_banned, addresses_store, report_take

from . import loop_database, metrics
from .batching import Batch
from .pair_notify import notified
from .process import closing_channels, current_process, grace_end_later, live_addresses, live_channels
from .ratelimit import TokenBucket
from .stomp.frames import Frame
from .stomp_consumer import CLOSE_POLICY, ProtocolError, StompConsumer

logger = logging.getLogger(__name__)

HDR_RESUME_GRACE = "resume-grace"


def _hooks(process_id) -> dict:
    """What a pairing's transaction carries for the chat besides the pool: the hashed address
    of each connection whose user it stored, and the 10s that ride on its commit to other
    processes' connections (randomchat.pair_notify)."""
    return {"process_id": process_id, "closed_channels": closing_channels, "with_users": _addresses_store,
            "notified": notified}


def _addresses_store(users) -> None:
    addresses_store([(u.pk, live_addresses[u.channel_name]) for u in users if u.channel_name in live_addresses])


def starts_write(entries: list[Entry]) -> list:
    """A pairing batch (dialogs_start), on the database thread."""
    return dialogs_start(entries, **_hooks(entries[0].process_id))


async def start_alone_write(entry: Entry):
    """A /start alone in its batch: on PostgreSQL its one flight, run by the event loop
    (randomchat.loop_database); else as a batch on the database thread."""
    if not loop_database.enabled():
        [result] = await database_sync_to_async(starts_write)([entry])
        return result
    flight, finish = start_alone(entry, **_hooks(entry.process_id))
    await loop_database.run(flight)
    return finish()


MESSAGES = Batch(messages_store)
# Every /start that arrives while the previous batch is written is paired in the next one.
STARTS = Batch(starts_write, alone=start_alone_write)


@contextlib.contextmanager
def database_refusal(service: str):
    """A database that is down becomes the refusal `unavailable`: the connection stays open."""
    try:
        yield
    except DATABASE_UNAVAILABLE as exc:
        logger.warning("database unavailable service=%s error=%s", service, type(exc).__name__)
        raise unavailable() from None


async def call(service, **kwargs):
    """Run a service on the database thread."""
    with database_refusal(service.__name__):
        return await database_sync_to_async(service)(**kwargs)


def parse_or_refusal(body: bytes) -> tuple[DialogRequest | None, Refusal | None]:
    """A /message or /stop body, or why it is invalid: the caller decides when that matters."""
    try:
        return parse_dialog_request(body), None
    except Refusal as refusal:
        return None, refusal


class ChatConsumer(StompConsumer):
    destinations = {
        "/start": "send_start", "/message": "send_message", "/stop": "send_stop", "/report": "send_report",
        "/resume": "send_resume",
    }
    event_destination = "/user/dialog"

    async def connect(self) -> None:
        self.user_id = None  # the user this connection holds (its latest)
        self.dialog_id: str | None = None  # its current or latest dialog
        self.dialog_user = None  # the user it held in that dialog
        self.dialog_ended_at: float | None = None  # when it learned that dialog ended (its 30)
        self.resume_grace = 0  # seconds its dialog is kept after a drop (PROTOCOL.md §7.1)
        self.resume_token: ResumeToken | None = None  # for the 10 of its latest /start
        self.address_hash = address_hash(client_address(self.scope))  # never the address itself
        self.start_bucket = TokenBucket(*settings.RANDOMCHAT_RATE_START)
        self.message_bucket = TokenBucket(*settings.RANDOMCHAT_RATE_MESSAGE)
        self.report_bucket = TokenBucket(*settings.RANDOMCHAT_RATE_REPORT)
        self.rate_refusals = 0
        self.waiting_since: float | None = None
        self.order = DialogOrder()
        self.gap_timer: asyncio.Task | None = None
        live_channels.add(self.channel_name)
        if self.address_hash is not None:
            live_addresses[self.channel_name] = self.address_hash
        metrics.OPEN_CONNECTIONS.inc()
        await super().connect()
        logger.info("event=connect session=%s", self.session_id)

    async def disconnect(self, code: int) -> None:
        live_channels.discard(self.channel_name)
        closing_channels.add(self.channel_name)  # from now on nobody is paired with it
        live_addresses.pop(self.channel_name, None)
        # Dropped: the socket closed under it, or its heart-beats stopped; not a DISCONNECT,
        # nor a close of the server's own.
        dropped = not self.closing or self.drop_reason == "timeout"
        await super().disconnect(code)
        metrics.OPEN_CONNECTIONS.dec()
        self._cancel_gap_timer()
        if dropped and self.resume_grace and self.dialog_id is not None and await self.detach():
            closing_channels.discard(self.channel_name)  # its user is in a dialog, not in the pool
            return
        try:
            notices = await database_sync_to_async(user_leave)(
                channel_name=self.channel_name, reason=self.drop_reason or "disconnect"
            )
            closing_channels.discard(self.channel_name)
            await self.publish(notices)
        except Exception:
            # The process's heartbeat loop releases the user once the database is back.
            logger.exception("event=leave_failed session=%s", self.session_id)

    async def frame_connect(self, frame: Frame) -> None:
        """A banned address gets ERROR `banned` instead of CONNECTED."""
        if self.version is None and await self.banned():
            await self.reject("banned", kind="banned", code=CLOSE_POLICY)
            return
        await super().frame_connect(frame)

    frame_stomp = frame_connect

    def connected_headers(self, frame: Frame) -> tuple[tuple[str, str], ...]:
        """`resume-grace`: the grace this connection asked for, capped (PROTOCOL.md §7.1)."""
        asked = frame.get(HDR_RESUME_GRACE)
        if asked is None:
            return ()
        if not asked.isascii() or not asked.isdigit():
            raise ProtocolError("Invalid resume-grace header", asked)
        self.resume_grace = min(int(asked), settings.RANDOMCHAT_RESUME_GRACE_MAX)
        return ((HDR_RESUME_GRACE, str(self.resume_grace)),)

    # Destinations

    async def send_start(self, frame: Frame) -> None:
        try:
            await self.check_rate(self.start_bucket)
            self.require_layer()
            request = parse_start(frame.body)
            process = await self.ensure_process()
            token = ResumeToken.new() if self.resume_grace else None
            with database_refusal("dialogs_start"):
                started = await STARTS.submit(Entry(self.channel_name, request, process.pk, self.resume_grace, token,
                                                   avoids_nobody=self.avoids_nobody()))
        except Refusal as refusal:
            await self.refuse(events.START_REFUSED, refusal)
            return
        self.user_id, self.resume_token = started.user_id, token
        self.waiting_since = asyncio.get_running_loop().time()
        await self.publish(started.notices, after_receipt=True)  # its own 10 follows the /start's RECEIPT
        logger.info("event=pool_enter session=%s user=%s", self.session_id, started.user_id)

    async def send_message(self, frame: Frame) -> None:
        request, invalid = parse_or_refusal(frame.body)  # a refusal echoes the ids as sent
        try:
            await self.check_rate(self.message_bucket)
            if invalid is not None:
                raise invalid
            self.require_layer()
            draft = message_draft(request, self.user_id)
            with database_refusal("messages_store"):
                notices = await MESSAGES.submit(draft)
        except Refusal as refusal:
            await self.refuse(events.MESSAGE_REFUSED, refusal, request)
            return
        await self.publish(notices)

    async def send_stop(self, frame: Frame) -> None:
        request, invalid = parse_or_refusal(frame.body)  # any body cancels waiting
        try:
            self.require_layer()
            cancelled = await call(pool_cancel, channel_name=self.channel_name)
            if cancelled is not None:
                left = events.chat_event(events.LEFT, service={"reason": "cancelled"})
                await self.publish([Notice(self.channel_name, left)])
                return
            if invalid is not None:
                raise invalid
            notices = await call(dialog_stop, request=request, held_user=self.user_id)
        except Refusal as refusal:
            await self.refuse(events.STOP_REFUSED, refusal, request)
            return
        await self.publish(notices)

    async def send_report(self, frame: Frame) -> None:
        """Report the current or latest dialog: 40 with the reportId; an active dialog ends as
        by this connection's /stop."""
        request, invalid = parse_or_refusal(frame.body)
        try:
            await self.check_rate(self.report_bucket)
            if invalid is not None:
                raise invalid
            self.require_layer()
            report_id, notices = await call(report_take, request=request, reporter=self.dialog_user)
        except Refusal as refusal:
            await self.refuse(events.REPORT_REFUSED, refusal, request)
            return
        metrics.REPORTS.inc()
        await self.publish(notices)
        await self.emit(self.order.push_unordered(self.reply(events.REPORTED, request, {"reportId": str(report_id)})))

    async def send_resume(self, frame: Frame) -> None:
        """Take over the participant of a dropped connection: its 10, then what it missed."""
        try:
            await self.check_rate(self.start_bucket)
            self.require_layer()
            token = parse_resume(frame.body)
            process = await self.ensure_process()
            new_token = ResumeToken.new()
            resumed = await call(
                participant_resume, token=token, channel_name=self.channel_name, process_id=process.pk,
                grace=self.resume_grace, new_token=new_token,
            )
        except Refusal as refusal:
            await self.refuse(events.START_REFUSED, refusal)
            return
        owed = await self.owed_by_last_dialog()
        self.user_id = self.dialog_user = resumed.user_id
        self.dialog_id, self.dialog_ended_at = str(resumed.dialog_id), None
        self.resume_grace = resumed.grace
        metrics.RESUMES.inc()
        logger.info("event=resume session=%s chat=%s user=%s", self.session_id, self.dialog_id, self.user_id)
        ready = owed + self.order.begin(resumed.first_seq)
        ready += self.order.push_unordered(resumed.paired)
        for event in resumed.missed:
            ready += self.order.push(event["seq"], event)
        await self.emit(ready)
        await send_notices(self.channel_layer, resumed.notices)

    async def session_active(self) -> bool:
        """A connection in the pool or in a dialog may idle: a partner can be slow to reply."""
        if self.user_id is None:
            return False
        try:
            return await call(user_held_on, channel_name=self.channel_name)
        except Refusal:
            return True  # the database is down: keep what cannot be checked

    # Channel-layer events

    async def chat_event(self, event: dict) -> None:
        """Deliver an event in its dialog's order; none of an earlier dialog passes once the
        next one has begun."""
        chat, code = event["chat"], event["code"]
        if code == events.PAIRED:
            if not self.takes_pair(event):
                metrics.DUPLICATE_EVENTS.inc()
                return
            owed = await self.owed_by_last_dialog()
            self.dialog_id, self.dialog_user, self.dialog_ended_at = chat, self.user_id, None
            if self.resume_token is not None:  # to its owner only, never through the layer
                event = events.with_service(event, resumeToken=self.resume_token.secret)
            if self.waiting_since is not None:
                metrics.PAIRING_WAIT.observe(asyncio.get_running_loop().time() - self.waiting_since)
                self.waiting_since = None
            await self.emit(owed + self.order.begin())
        elif chat is not None and chat != self.dialog_id:
            return
        elif code == events.LEFT and chat is not None:
            self.dialog_ended_at = asyncio.get_running_loop().time()
        seq = event.get("seq")
        if seq is None or event.get("repeat"):
            await self.emit(self.order.push_unordered(event))
        else:
            await self.emit(self.order.push(seq, event))
        if code == events.PAIRED:  # logged once the 10 is out
            logger.info("event=pair session=%s chat=%s user=%s", self.session_id, chat, self.user_id)

    async def moderation_banned(self, event: dict) -> None:
        """This connection's address was banned: its dialog ends as by an admin, then it closes."""
        if self.closing:
            return
        self.drop_reason = "admin"
        if self.dialog_id is not None:
            try:
                notices = await call(dialog_end, dialog_id=self.dialog_id, reason=Dialog.EndReason.ADMIN)
            except Refusal:  # the database is down: the disconnect ends it
                notices = []
            await self.publish(notices)
        await self.reject("banned", kind="banned", code=CLOSE_POLICY)

    async def resume_taken(self, event: dict) -> None:
        """Another connection resumed this one's participant: it holds nothing now, and closes."""
        self.user_id = self.dialog_id = self.dialog_user = None
        await self.reject("Resumed by another connection", kind="resumed_elsewhere", code=CLOSE_POLICY)

    async def order_gap(self, event: dict) -> None:
        """An event of the dialog never came (lost with a dead process or a layer outage): read
        the missing ones from the database, then send what waits."""
        if self.gap_timer is not None:  # that gap was filled, and a newer one is being timed
            return
        missing = self.order.missing()
        logger.warning("event=order_gap session=%s chat=%s missing=%s", self.session_id, self.dialog_id, missing)
        ready = []
        if missing is not None and self.dialog_id is not None:
            ready = await self.read_back(dialog_events, chat=self.dialog_id, first_seq=missing[0], last_seq=missing[1])
        await self.emit(ready + self.order.skip_gap())

    async def owed_by_last_dialog(self) -> list:
        """Before a new dialog begins (a 10, a /resume), what the last one still owes this
        connection: events it waits for, or its 30 that has not come (notices still on their
        way, which would arrive after the new dialog began and be dropped), read back from the
        database."""
        if self.dialog_id is None or (self.dialog_ended_at is not None and not self.order.waiting):
            return []
        return await self.read_back(dialog_owed, chat=self.dialog_id, participant=self.dialog_user,
                                    channel_name=self.channel_name, first_seq=self.order.next_seq)

    async def read_back(self, service, **kwargs) -> list:
        """The current dialog's events as `service` reads them from the database, put in its
        order: what is now ready to send. Nothing if the database is down too: what waits then
        goes without them."""
        try:
            stored = await call(service, **kwargs)
        except Refusal:
            return []
        ready = []
        for event in stored:
            if event["code"] == events.LEFT:
                self.dialog_ended_at = asyncio.get_running_loop().time()
            ready += self.order.push(event["seq"], event)
        return ready

    # Helpers

    async def banned(self) -> bool:
        """Whether this connection's address is banned; while the database is down, it is not."""
        if self.address_hash is None:
            return False
        try:
            return await call(address_banned, address_hash=self.address_hash)
        except Refusal:
            return False

    async def detach(self) -> bool:
        """Keep the dialog through a drop for the grace; False: leave it as without resume."""
        try:
            grace = await call(
                participant_detach, channel_name=self.channel_name, delivered_seq=self.order.last_sent
            )
        except Refusal:
            return False
        if grace:
            logger.info("event=detach session=%s chat=%s grace=%s", self.session_id, self.dialog_id, grace)
            grace_end_later(grace)
        return bool(grace)

    def takes_pair(self, event: dict) -> bool:
        """Whether a 10 is news: one for this connection's latest user, of a dialog it has not
        begun. A process whose listening connection was lost gets the 10s of its connections'
        active dialogs again (randomchat.pair_notify), which may even trail a dialog's end."""
        if self.user_id is None or event["chat"] == self.dialog_id:
            return False
        return json.loads(event["body"])["senderUUID"] == str(self.user_id)

    def avoids_nobody(self) -> bool:
        """PROTOCOL.md §7.2: whether no dialog of this connection ended within the rematch
        window, so that its /start needs no look-up of partners to avoid. It learns of an end
        after the database stored it, so its clock errs on the side of looking up."""
        if self.dialog_id is None:
            return True
        ended = self.dialog_ended_at
        return ended is not None and asyncio.get_running_loop().time() - ended > settings.RANDOMCHAT_REMATCH_WINDOW

    async def ensure_process(self):
        with database_refusal("process_register"):
            return await current_process()

    def require_layer(self) -> None:
        """While the channel layer is down nobody else could be told: do nothing, say `unavailable`."""
        if not getattr(self.channel_layer, "available", True):
            raise unavailable()

    async def check_rate(self, bucket: TokenBucket) -> None:
        """Refuse over the limit; close a connection that keeps pushing past it."""
        if bucket.take(asyncio.get_running_loop().time()):
            self.rate_refusals = 0
            return
        self.rate_refusals += 1
        if self.rate_refusals >= settings.RANDOMCHAT_RATE_ABUSE_LIMIT:
            await self.reject(f"Rate limit exceeded {self.rate_refusals} times in a row", kind="rate_limited")
        raise Refusal("rate_limited", "Too many requests; slow down")

    async def publish(self, notices: list[Notice], *, after_receipt: bool = False) -> None:
        """Send the notices. This connection's own events are taken at once, in their place in
        the dialog's order, with no trip through the channel layer: before the receipt of the
        frame that caused them, or, `after_receipt`, right after it (StompConsumer.after_answer)."""
        others = []
        for notice in notices:
            if notice.channel == self.channel_name and notice.message["type"] == "chat.event":
                if after_receipt:
                    self.after_answer.append(functools.partial(self.chat_event, notice.message))
                else:
                    await self.chat_event(notice.message)
            else:
                others.append(notice)
        await send_notices(self.channel_layer, others)

    async def emit(self, ready: list) -> None:
        """Send what the dialog's order let go: events, and frames that waited behind them."""
        for item in ready:
            if isinstance(item, Frame):
                await self.send_frame(item)
                continue
            await self.deliver(item)
            code = item.get("code")
            if code is not None:
                metrics.EVENTS_DELIVERED.labels(code).inc()
                if code == events.MESSAGE:
                    metrics.MESSAGES_DELIVERED.inc()
        if self.order.waiting and self.gap_timer is None:
            self.gap_timer = asyncio.get_running_loop().create_task(self._gap_timeout())
        elif not self.order.waiting:
            self._cancel_gap_timer()

    async def send_answer(self, frame: Frame) -> None:
        await self.emit(self.order.push_unordered(frame))

    async def refuse(self, code: int, refusal: Refusal, request: DialogRequest | None = None) -> None:
        if self.closing:  # rejected meanwhile (sustained abuse): the ERROR said it all
            return
        logger.info("event=refusal session=%s code=%s error=%s", self.session_id, code, refusal.slug)
        metrics.REFUSALS.labels(refusal.slug).inc()
        item = self.reply(code, request, refusal.as_error())
        if refusal.after_seq is not None and request.chat == self.dialog_id:
            await self.emit(self.order.push_after(refusal.after_seq, item))
        else:
            await self.emit(self.order.push_unordered(item))

    @staticmethod
    def reply(code: int, request: DialogRequest | None, service: dict) -> dict:
        """An answer to a request: its ids as sent, and `service`."""
        body = events.event_body(
            code, chat=request.chat if request else None, sender=request.sender if request else None, service=service
        )
        return {"body": body}

    def _cancel_gap_timer(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    async def _gap_timeout(self) -> None:
        """Through the channel, so that the gap is skipped between two handlers, never inside one."""
        await asyncio.sleep(settings.RANDOMCHAT_ORDER_GAP_SECONDS)
        self.gap_timer = None
        await send_notices(self.channel_layer, [Notice(self.channel_name, {"type": "order.gap"})])
