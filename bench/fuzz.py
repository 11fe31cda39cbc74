"""Fuzz the STOMP codec and the consumer with generated frames: valid, mutated and random.

    .venv/bin/python bench/fuzz.py                 # 1,000,000 frames through each part
    .venv/bin/python bench/fuzz.py --quick         # 50,000 frames through each part
    .venv/bin/python bench/fuzz.py --frames 2000000 --seed 3 --part consumer

Not a test (no pytest, not in CI): a long run that counts. Both parts use one frame
generator (seeded, so a run can be repeated):

- valid frames: every client and server command and random unknown ones, random headers
  (escapes, colons, CR/LF, non-ASCII, empty names), bodies with and without NULs, for
  STOMP 1.0/1.1/1.2, encoded with randomchat.stomp.encode_frame;
- mutated frames: a valid frame with 1-4 edits (byte flips, inserted NUL/LF/CR/colon/
  backslash, deletions, duplications, truncation, a content-length made wrong, huge or
  not a number);
- random byte strings over an alphabet weighted towards STOMP's special bytes;
- heart-beat EOLs (LF and CRLF) between frames.

Part "codec": the frames, concatenated into streams, go through FrameParser.feed() in
random chunks (whole, split at random places, byte by byte), with random limits. A
FrameError is the expected answer to bad input (the parser is then replaced, as the
consumer drops the connection); any other exception is a failure. For every valid frame
fed alone, parse(encode(frame)) must give the frame back (a round-trip check).

Part "consumer": randomchat's ASGI application in-process through channels'
WebsocketCommunicator (a fresh SQLite file in WAL mode, the in-memory channel layer,
rate limits raised so that the handlers, not the limiter, see the frames). Each session
opens a connection, sends CONNECT (mostly valid), then 1-40 frames that keep the
connection open unless their content says otherwise (SUBSCRIBE/UNSUBSCRIBE/ACK/BEGIN/
COMMIT/ABORT and SEND to /start, /message, /stop with fuzzed JSON bodies, using chat and
sender UUIDs seen in earlier sessions' events, so sessions pair and poke at each other's
dialogs), then often a tail of mutated or random frames, split into WebSocket messages in
random ways (several frames per message, a frame over several messages; text or binary).
Sixteen sessions run at once. Failures: an exception out of the application, an ERROR
record in the log (the consumer's catch-all "stomp frame failed" logs one), an exception
in a background task, a server frame our parser cannot parse, or a session that neither
answers its final receipt nor closes within 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from randomchat.stomp import HEARTBEAT, Frame, FrameError, FrameParser, encode_frame  # noqa: E402
from randomchat.stomp import frames as f  # noqa: E402

COMMANDS = sorted(f.CLIENT_COMMANDS | f.SERVER_COMMANDS)
HEADER_NAMES = ["destination", "id", "receipt", "content-type", "content-length", "transaction", "ack",
                "accept-version", "heart-beat", "host", "login", "passcode", "subscription", "message-id", "x"]
TEXT_PIECES = ["a", "b", "/user/dialog", "/start", ":", "\\", "\n", "\r", "\\n", "\\c", "\\r", "\\t", "é", "日本",
               "\x00", " ", "1.2", "0,0", "", "\u2028", "\U0001f600", "\ud800"]
SPECIAL = b"\n\r\x00:\\ "
_LETTERS = b"SENDCOTIBUaeimnorst-:"
RANDOM_ALPHABET = list(SPECIAL) + list(range(256)) + list(_LETTERS)
RANDOM_WEIGHTS = [0.3 / len(SPECIAL)] * len(SPECIAL) + [0.2 / 256] * 256 + [0.5 / len(_LETTERS)] * len(_LETTERS)


class Gen:
    """The frame generator; `rng` decides everything."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.uuids: list[str] = [str(uuid.uuid4()) for _ in range(4)]

    def text(self, max_pieces: int = 4) -> str:
        r = self.rng
        return "".join(r.choice(TEXT_PIECES) if r.random() < 0.5 else r.choice("abcxyz0129-_/.")
                       for _ in range(r.randint(0, max_pieces)))

    def command(self) -> str:
        r = self.rng.random()
        if r < 0.85:
            return self.rng.choice(COMMANDS)
        if r < 0.95:
            return self.rng.choice(["send", "Connect", "FOO", "X-1", "A" * 32, "SUBSCRIBE2"])
        return self.rng.choice(["", "1ABC", "SE ND", "A" * 33, "SÉND", "SEND\r"])

    def valid_frame(self) -> tuple[Frame, str]:
        r = self.rng
        version = r.choice(["1.0", "1.1", "1.2", "1.2"])
        headers = tuple((r.choice(HEADER_NAMES) if r.random() < 0.7 else self.text(), self.text())
                        for _ in range(r.choice([0, 1, 2, 3, 5, 10])))
        body = r.randbytes(r.choice([0, 0, 1, 10, 100, 300]))
        return Frame(self.command(), headers, body), version

    def encoded_valid(self) -> tuple[bytes, Frame | None, str]:
        frame, version = self.valid_frame()
        try:
            return encode_frame(frame, version), frame, version
        except FrameError:
            return self.random_bytes(), None, version

    def mutate(self, data: bytes) -> bytes:
        r = self.rng
        b = bytearray(data)
        for _ in range(r.randint(1, 4)):
            op = r.random()
            pos = r.randrange(len(b) + 1)
            if op < 0.2 and b:
                b[min(pos, len(b) - 1)] = r.getrandbits(8)
            elif op < 0.45:
                b[pos:pos] = bytes([r.choice(SPECIAL)]) * r.randint(1, 3)
            elif op < 0.6 and b:
                del b[pos:pos + r.randint(1, 10)]
            elif op < 0.7 and b:
                b[pos:pos] = b[max(0, pos - 20):pos]
            elif op < 0.8:
                del b[pos:]
            else:
                i = b.find(b"content-length:")
                if i >= 0:
                    j = b.find(b"\n", i)
                    j = len(b) if j < 0 else j
                    b[i + 15:j] = r.choice([b"0", b"999999999999999999999", b"-1", b"1e3", b" 5", b"", b"\xd9\xa3",
                                            str(r.randint(0, 400)).encode()])
        return bytes(b)

    def random_bytes(self) -> bytes:
        """0-300 bytes: about 30% STOMP's special bytes, 20% any byte, the rest command letters."""
        n = self.rng.choice([0, 1, 2, 5, 20, 100, 300])
        return bytes(self.rng.choices(RANDOM_ALPHABET, weights=RANDOM_WEIGHTS, k=n))

    def heartbeat(self) -> bytes:
        return self.rng.choice([b"\n", b"\r\n", b"\n\n"])

    def any_frame(self) -> tuple[str, bytes, Frame | None, str]:
        r = self.rng.random()
        if r < 0.45:
            data, frame, version = self.encoded_valid()
            return ("valid" if frame else "random"), data, frame, version
        if r < 0.8:
            return "mutated", self.mutate(self.encoded_valid()[0]), None, "1.2"
        if r < 0.95:
            return "random", self.random_bytes(), None, "1.2"
        return "heartbeat", self.heartbeat(), None, "1.2"

    def chunks(self, data: bytes) -> list[bytes]:
        r = self.rng.random()
        if r < 0.5 or len(data) < 2:
            return [data]
        if r < 0.9:
            cuts = sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1, self.rng.randint(1, 5))))
            return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)])]
        return [data[i:i + 1] for i in range(min(len(data), 400))] + ([data[400:]] if len(data) > 400 else [])

    # Semantic frames for the consumer

    def json_value(self, depth: int = 0):
        r = self.rng
        x = r.random()
        if depth > 3 or x < 0.3:
            return r.choice([None, True, False, 0, -1, 151, 30, 2**70, 1.5, "", "x", "en", "male", "female", "other",
                             "\u0000", "a" * 70, self.rng.choice(self.uuids)])
        if x < 0.6:
            return {self.text(2): self.json_value(depth + 1) for _ in range(r.randint(0, 3))}
        return [self.json_value(depth + 1) for _ in range(r.randint(0, 3))]

    def start_body(self) -> bytes:
        r = self.rng
        body = {}
        if r.random() < 0.9:
            body["languageCode"] = r.choice(["en", "en", "de", "EN", "e", "english", 5, None])
        if r.random() < 0.7:
            body["name"] = r.choice(["Bob", " ", "", "a" * 65, "\u200b", "x\ny", 3, None, "Ω"])
        for key in ("userAttributes", "targetAttributes"):
            if r.random() < 0.6:
                body[key] = r.choice([None, {}, [], "x",
                                      {"gender": r.choice(["male", "female", "other", "x", None, 1]),
                                       "age": r.choice([None, 0, 30, 150, 151, -1, "30", True, 2.5,
                                                        {"min": r.choice([None, 20, 40, "a"]), "max": r.choice([None, 30, 10])}])}])
        if r.random() < 0.1:
            body[self.text(2)] = self.json_value()
        return self.encode_json(body)

    def dialog_body(self) -> bytes:
        r = self.rng
        body = {}
        if r.random() < 0.9:
            body["chatUUID"] = r.choice([r.choice(self.uuids), r.choice(self.uuids), "not-a-uuid", None, 5, ""])
        if r.random() < 0.9:
            body["senderUUID"] = r.choice([r.choice(self.uuids), r.choice(self.uuids), "x", None])
        if r.random() < 0.9:
            body["content"] = r.choice(["hi", "", " ", "a" * 4097, None, 5, ["x"], "Ω\u0000", "\ud800"])
        return self.encode_json(body)

    def encode_json(self, body) -> bytes:
        r = self.rng.random()
        if r < 0.85:
            try:
                return json.dumps(body).encode()
            except (ValueError, TypeError):
                return b"{}"
        if r < 0.9:
            return b"[" * self.rng.choice([10, 1000, 100000]) + b"]" * 3
        if r < 0.95:
            return self.rng.choice([b"", b"null", b"[]", b"\"x\"", b"{\"a\":NaN}", b"{\"a\":1e999}", b"\xff\xfe{}",
                                    b'{"name":"\\ud800","languageCode":"en"}'])
        return self.random_bytes()

    def connect(self) -> bytes:
        r = self.rng
        if r.random() < 0.03:
            return self.mutate(encode_frame(Frame("CONNECT", (("accept-version", "1.2"),)), "1.2"))
        headers = []
        if r.random() < 0.9:
            headers.append(("accept-version", r.choice(["1.2", "1.1,1.2", "1.0", "1.1", "1.0,1.1,1.2", "2.0", "", "1.2,9"])))
        if r.random() < 0.7:
            headers.append(("heart-beat", r.choice(["0,0", "10000,10000", "1,1", "0,5000", "x", "1,2,3", "99999999999,0"])))
        headers.append(("host", "localhost"))
        return encode_frame(Frame(r.choice(["CONNECT", "CONNECT", "STOMP"]), tuple(headers)), "1.2")

    def session_frame(self, open_txs: list[str], subs: list[str]) -> bytes:
        """A frame that, by its framing, keeps the connection open."""
        r = self.rng
        x = r.random()
        receipt = (("receipt", f"r{r.randint(0, 99)}"),) if r.random() < 0.2 else ()
        if x < 0.5:
            dest = r.choice(["/start", "/message", "/message", "/stop", "/app/start", "/app/message", "/app/stop"])
            body = self.start_body() if dest.endswith("start") else self.dialog_body()
            headers = (("destination", dest), ("content-type", "application/json")) + receipt
            if open_txs and r.random() < 0.2:
                headers += (("transaction", r.choice(open_txs)),)
            return encode_frame(Frame("SEND", headers, body))
        if x < 0.6 and len(subs) < 10:
            sub = f"s{r.randint(0, 1000000)}"
            subs.append(sub)
            return encode_frame(Frame("SUBSCRIBE", (("id", sub), ("destination", "/user/dialog")) + receipt))
        if x < 0.65 and subs:
            return encode_frame(Frame("UNSUBSCRIBE", (("id", subs.pop()),) + receipt))
        if x < 0.72 and len(open_txs) < 4:
            tx = f"t{r.randint(0, 1000000)}"
            open_txs.append(tx)
            return encode_frame(Frame("BEGIN", (("transaction", tx),) + receipt))
        if x < 0.78 and open_txs:
            tx = open_txs.pop(r.randrange(len(open_txs)))
            return encode_frame(Frame(r.choice(["COMMIT", "ABORT"]), (("transaction", tx),) + receipt))
        if x < 0.85:
            ack_id = self.text(2).replace("\ud800", "?")
            return encode_frame(Frame(r.choice(["ACK", "NACK"]), (("id", ack_id),) + receipt))
        return self.heartbeat()

    def tail_frame(self) -> bytes:
        """Anything at all: mutated, random, unknown commands, missing headers, DISCONNECT."""
        r = self.rng.random()
        if r < 0.4:
            return self.mutate(self.session_frame([], []) if self.rng.random() < 0.5 else self.encoded_valid()[0])
        if r < 0.7:
            return self.encoded_valid()[0]
        if r < 0.9:
            return self.random_bytes()
        return encode_frame(Frame("DISCONNECT", (("receipt", "bye"),)))


# Part 1: the codec


def fuzz_codec(total: int, seed: int, report_every: int) -> dict:
    gen = Gen(seed)
    rng = gen.rng
    stats = {"frames": 0, "valid": 0, "mutated": 0, "random": 0, "heartbeat": 0, "parsed": 0, "frame_errors": 0,
             "roundtrip_checked": 0, "roundtrip_mismatch": 0, "failures": 0, "bytes": 0}
    failures = []
    t0 = time.monotonic()
    next_report = report_every
    while stats["frames"] < total:
        # A stream of 1-8 items, fed in random chunks to one parser with random limits.
        items = [gen.any_frame() for _ in range(rng.choice([1, 1, 2, 3, 8]))]
        stats["frames"] += len(items)
        for kind, _, _, _ in items:
            stats[kind] += 1
        stream = b"".join(d for _, d, _, _ in items)
        stats["bytes"] += len(stream)
        version = rng.choice(["1.0", "1.1", "1.2"]) if len(items) > 1 else items[0][3]
        limits = {} if rng.random() < 0.8 else {"max_frame_size": rng.choice([16, 64, 300]),
                                                "max_headers": rng.choice([0, 1, 3]),
                                                "max_header_line": rng.choice([4, 20, 100])}
        parser = FrameParser(version=version, **limits)
        out = []
        try:
            for chunk in gen.chunks(stream):
                out += parser.feed(chunk)
        except FrameError:
            stats["frame_errors"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the exercise
            stats["failures"] += 1
            if len(failures) < 20:
                failures.append({"error": repr(exc), "stream": stream[:2000].hex(), "version": version, "limits": limits,
                                 "traceback": traceback.format_exc(limit=4)})
        stats["parsed"] += sum(1 for x in out if x is not HEARTBEAT)
        # Round trip: every valid frame, alone, default limits, whole.
        for _, data, frame, version in items:
            if frame is None:
                continue
            stats["roundtrip_checked"] += 1
            expected = Frame(frame.command, tuple(x for x in frame.headers if x[0] != "content-length")
                             + (("content-length", str(len(frame.body))),), frame.body)
            try:
                got = FrameParser(version=version).feed(data)
            except Exception as exc:  # noqa: BLE001
                got = [repr(exc)]
            if got != [expected]:
                stats["roundtrip_mismatch"] += 1
                if len(failures) < 20:
                    failures.append({"roundtrip": True, "frame": repr(frame), "version": version, "got": repr(got)[:500]})
        if stats["frames"] >= next_report:
            next_report += report_every
            rate = stats["frames"] / (time.monotonic() - t0)
            print(f"  codec: {stats['frames']:>9} frames, {rate:,.0f}/s, failures {stats['failures']}, "
                  f"round-trip mismatches {stats['roundtrip_mismatch']}", flush=True)
    stats["seconds"] = time.monotonic() - t0
    stats["failure_samples"] = failures
    return stats


# Part 2: the consumer


class ErrorCounter(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(self.format(record)[:3000])


async def fuzz_consumer(total: int, seed: int, concurrency: int, report_every: int, errors: ErrorCounter) -> dict:
    from channels.testing import WebsocketCommunicator

    from randomchat.asgi import application

    gen = Gen(seed + 1)
    rng = gen.rng
    stats = {"frames": 0, "sessions": 0, "ws_messages": 0, "tail_frames": 0, "server_frames": 0, "server_errors": 0,
             "server_closes": 0, "receipts": 0, "events": 0, "unhandled": 0, "bad_server_frames": 0, "stalled": 0}
    samples: list[dict] = []
    loop_errors: list[str] = []
    loop = asyncio.get_running_loop()

    def on_loop_error(loop, context):
        exc = context.get("exception")
        loop_errors.append(f"{context.get('message')}: {exc!r}")

    loop.set_exception_handler(on_loop_error)
    t0 = time.monotonic()
    next_report = [report_every]

    def learn(body: bytes) -> None:
        try:
            event = json.loads(body)
        except ValueError:
            return
        for key in ("chatUUID", "senderUUID"):
            value = event.get(key) if isinstance(event, dict) else None
            if isinstance(value, str):
                gen.uuids.append(value)
        if len(gen.uuids) > 200:
            del gen.uuids[:100]

    async def session(n: int) -> None:
        frames = [gen.connect()]
        txs: list[str] = []
        subs: list[str] = []
        frames += [gen.session_frame(txs, subs) for _ in range(rng.randint(1, 40))]
        tail = [gen.tail_frame() for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
        frames += tail
        stream = b"".join(frames)
        messages = []
        if rng.random() < 0.7:
            for frame in frames:
                messages += gen.chunks(frame) if rng.random() < 0.1 else [frame]
        else:
            messages = gen.chunks(stream)
        if tail or not frames[0].startswith((b"CONNECT\n", b"STOMP\n")):
            # A mutated frame may be incomplete (cut short, or a content-length past its end):
            # the parser rightly waits for more. Padding past the frame size limit ends
            # every such state, by a complete frame (stray NULs after it are skipped) or an
            # ERROR, so that the probe below is always answered or the connection closed.
            messages.append(b"\x00" * 66_000)
        probe = f"probe-{n}"
        messages.append(encode_frame(Frame("SUBSCRIBE", (("id", probe), ("destination", "/user/dialog"), ("receipt", probe)))))
        stats["frames"] += len(frames)
        stats["tail_frames"] += len(tail)
        stats["ws_messages"] += len(messages)
        comm = WebsocketCommunicator(application, "/connect", subprotocols=["v12.stomp"])
        try:
            connected, _ = await comm.connect(timeout=20)
            if not connected:
                raise RuntimeError("handshake refused")
            for m in messages:
                if not m:
                    continue  # the communicator cannot send an empty WebSocket message
                try:
                    await comm.send_to(text_data=m.decode("utf-8"))
                except UnicodeDecodeError:
                    await comm.send_to(bytes_data=m)
            # Until CONNECTED, the server writes STOMP 1.0 (no header escapes), as a client
            # that has not negotiated must read it.
            parser = FrameParser(version="1.0")
            seen = []
            stalled = False
            while True:
                try:
                    out = await comm.receive_output(timeout=20)
                except asyncio.TimeoutError:
                    # receive_output has cancelled the application by now.
                    stats["stalled"] += 1
                    stalled = True
                    if len(samples) < 20:
                        samples.append({"stalled": True, "seen": seen[-10:], "stream": stream[:3000].hex()})
                    break
                if out["type"] == "websocket.close":
                    stats["server_closes"] += 1
                    break
                try:
                    items = parser.feed(out["text"].encode() if out.get("text") is not None else out["bytes"])
                except FrameError as exc:
                    stats["bad_server_frames"] += 1
                    samples.append({"bad_server_frame": repr(exc), "output": repr(out)[:1000]})
                    parser = FrameParser(version=parser.version)
                    continue
                done = False
                for item in items:
                    if item is HEARTBEAT:
                        continue
                    stats["server_frames"] += 1
                    seen.append(f"{item.command} {item.headers[:2]}")
                    if item.command == "CONNECTED":
                        parser.version = item.get("version") or "1.0"
                    if item.command == "ERROR":
                        stats["server_errors"] += 1
                    elif item.command == "MESSAGE":
                        stats["events"] += 1
                        learn(item.body)
                    elif item.command == "RECEIPT":
                        stats["receipts"] += 1
                        done = done or item.get("receipt-id") == probe
                if done:
                    break
            if not stalled:
                await comm.disconnect(timeout=20)
        except Exception as exc:  # noqa: BLE001 - what the application raised
            stats["unhandled"] += 1
            if len(samples) < 20:
                samples.append({"unhandled": repr(exc), "traceback": traceback.format_exc(limit=8),
                                "stream": stream[:3000].hex()})
            try:
                await comm.disconnect(timeout=5)
            except BaseException:  # noqa: BLE001
                pass
        stats["sessions"] += 1
        if stats["frames"] >= next_report[0]:
            next_report[0] += report_every
            rate = stats["frames"] / (time.monotonic() - t0)
            print(f"  consumer: {stats['frames']:>9} frames in {stats['sessions']} sessions, {rate:,.0f}/s, "
                  f"unhandled {stats['unhandled']}, log errors {len(errors.records)}, stalled {stats['stalled']}", flush=True)

    async def watchdog() -> None:
        """Prints every task's stack when no session has ended for 60 s (a hang is a finding)."""
        last = -1
        while True:
            await asyncio.sleep(60)
            if stats["sessions"] == last:
                print(f"  consumer: no session ended for 60 s; tasks:", file=sys.stderr)
                for task in asyncio.all_tasks():
                    task.print_stack(limit=12, file=sys.stderr)
            last = stats["sessions"]

    dog = loop.create_task(watchdog())

    async def worker(w: int) -> None:
        n = w
        while stats["frames"] < total:
            await session(n)
            n += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    dog.cancel()
    await asyncio.sleep(6)  # let timers that sessions left behind (pair confirmations) run out
    stats["seconds"] = time.monotonic() - t0
    stats["loop_errors"] = len(loop_errors)
    stats["loop_error_samples"] = loop_errors[:10]
    stats["samples"] = samples
    return stats


def setup_django() -> str:
    # On tmpfs when there is one: the fuzz is about code paths, not about the disk's fsync.
    fd, path = tempfile.mkstemp(prefix="fuzz-", suffix=".sqlite3", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.close(fd)
    os.unlink(path)
    env = {"RANDOMCHAT_SQLITE_PATH": path}
    h.migrate(env)
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    for key, value in {**env, **h.RAISED_RATE_LIMITS, "RANDOMCHAT_LOG_LEVEL": "WARNING"}.items():
        os.environ[key] = value
    for key in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(key, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "randomchat.settings"
    import django

    django.setup()
    return path


def consumer_worker(args) -> None:
    path = setup_django()
    errors = ErrorCounter()
    errors.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(errors)
    sys.stdout, out = sys.stderr, sys.stdout  # progress to stderr, the result alone to stdout
    try:
        s = asyncio.run(fuzz_consumer(args.frames, args.seed, args.concurrency, max(args.frames // 5, 1), errors))
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
    s["log_error_count"] = len(errors.records)
    s["log_errors"] = errors.records[:20]
    out.write(json.dumps(s) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50,000 frames per part")
    parser.add_argument("--frames", type=int, help="frames per part (default 1,000,000)")
    parser.add_argument("--part", choices=["codec", "consumer", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="consumer processes (each its own database)")
    parser.add_argument("--samples", default=None, help="write failure samples (JSON) to this file")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "consumer":
        consumer_worker(args)
        return
    total = args.frames or (50_000 if args.quick else 1_000_000)
    every = max(total // 10, 1)
    h.header("fuzz: the STOMP codec and the consumer")
    print(f"# {total} frames per part, seed {args.seed}", flush=True)
    failures = 0
    dump = {}
    if args.part in ("codec", "both"):
        s = fuzz_codec(total, args.seed, every)
        dump["codec"] = s["failure_samples"]
        failures += s["failures"] + s["roundtrip_mismatch"]
        print(f"codec: {s['frames']} frames ({s['valid']} valid, {s['mutated']} mutated, {s['random']} random, "
              f"{s['heartbeat']} heart-beats; {s['bytes'] / 1e6:.1f} MB) in {s['seconds']:.0f} s: {s['parsed']} frames parsed, "
              f"{s['frame_errors']} FrameErrors (expected), {s['failures']} other exceptions; round trip "
              f"{s['roundtrip_checked']} checked, {s['roundtrip_mismatch']} mismatches", flush=True)
    if args.part in ("consumer", "both"):
        procs = []
        share = -(-total // args.workers)
        for w in range(args.workers):
            cmd = [h.PYTHON, __file__, "--role", "consumer", "--frames", str(share), "--seed", str(args.seed + 1000 * w),
                   "--concurrency", str(args.concurrency)]
            procs.append(subprocess.Popen(cmd, cwd=h.REPO, stdout=subprocess.PIPE, text=True))
        parts = []
        for p in procs:
            out = p.communicate()[0]
            if p.returncode != 0:
                raise RuntimeError(f"consumer worker failed ({p.returncode}): {out[-3000:]}")
            parts.append(json.loads(out.strip().splitlines()[-1]))
        s = {k: sum(part[k] for part in parts) for k in parts[0] if isinstance(parts[0][k], (int, float))}
        s["seconds"] = max(part["seconds"] for part in parts)
        dump["consumer"] = [x for part in parts for x in part["samples"]]
        dump["consumer_log_errors"] = [x for part in parts for x in part["log_errors"]]
        dump["consumer_loop_errors"] = [x for part in parts for x in part["loop_error_samples"]]
        bad = s["unhandled"] + s["log_error_count"] + s["loop_errors"] + s["bad_server_frames"] + s["stalled"]
        failures += bad
        print(f"consumer: {s['frames']} frames ({s['tail_frames']} of them mutated/random/any tails) in {s['sessions']} "
              f"sessions, {s['ws_messages']} WebSocket messages, {args.workers} processes, {s['seconds']:.0f} s; "
              f"server sent {s['server_frames']} frames: "
              f"{s['events']} events, {s['receipts']} receipts, {s['server_errors']} ERRORs, {s['server_closes']} closes; "
              f"unhandled exceptions {s['unhandled']}, ERROR log records {s['log_error_count']}, background-task errors "
              f"{s['loop_errors']}, unparsable server frames {s['bad_server_frames']}, stalled sessions {s['stalled']}", flush=True)
    if args.samples:
        with open(args.samples, "w") as fh:
            json.dump(dump, fh, indent=1)
    print(f"result: {'no failures' if failures == 0 else f'{failures} FAILURES'}"
          + (f" (samples in {args.samples})" if args.samples and failures else ""))
    if failures and not args.samples:
        print(json.dumps(dump, indent=1)[:6000])
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
