"""Chat throughput: D dialogs ping-pong messages for T seconds, randomchat next to a floor.

    .venv/bin/python bench/dialogs.py              # 50 dialogs, 10 s, 5 rounds per server
    .venv/bin/python bench/dialogs.py --quick      # 2 rounds of 4 s
    .venv/bin/python bench/dialogs.py --scale      # 2 daphnes on PostgreSQL + Redis vs 1 on SQLite,
                                                   # then the channel layers alone

Default mode: one daphne serving randomchat (embedded default: a fresh SQLite file and the
in-memory channel layer) and one serving bench/floor.py (a consumer that only group_sends
what it receives: no validation, no database) run side by side; the rounds alternate
between them in a shuffled order. Each round a separate client process (asyncio
`websockets`, randomchat's own FrameParser) opens 2*D connections, pairs them into D
dialogs (each dialog its own language code, so the pairs are known), then in every dialog
A sends a message, B answers as soon as it reads it, A sends the next one as soon as it
reads the answer: one message in flight per dialog. After a warm-up (2 s) the client
counts for T seconds:

- deliveries/s: MESSAGE frames of chat messages read by all clients (each message is
  delivered twice: to its author and to the partner), divided by T;
- round trip: from writing a message to reading the partner's answer to it (two server
  passes), p50 and p99.

Figures are medians over the rounds; the ratio is randomchat's median over the floor's.
Afterwards the database must hold every message the clients sent ("persisted"), and no
message may have been refused. The server's rate limits are raised (RANDOMCHAT_RATE_*):
one message in flight per dialog is far above 10 per second per connection.

--scale: the same clients (2 client processes) against (a) 1 daphne on SQLite + the
in-memory layer, (b) 2 daphnes on one PostgreSQL database + Redis (randomchat.layers.RedisChannelLayer),
dialogs spread so that half of them have their two users on different processes, and
(c) 1 daphne on PostgreSQL + Redis, to tell the cost of the backends from the gain of the
second process; and (b) with bench/proposed_asgi.py. PostgreSQL and Redis are a private
cluster and redis-server that the harness starts (see bench/harness.py). Then the channel
layers alone, in one process: send -> receive throughput and latency of
InMemoryChannelLayer, channels-redis's RedisChannelLayer and RedisPubSubChannelLayer, and
randomchat.layers.RedisChannelLayer, with the sender the receiving layer itself and (Redis
layers) a second instance of it, as another process would send.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import string
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

CODES = ["".join(c) for c in itertools.product(string.ascii_lowercase, repeat=3)]
TEXT = "How are you doing today? Tell me something about where you live."


# The client process


class Dialog:
    __slots__ = ("a", "b", "sent_at", "seq", "idle")

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.sent_at = 0.0
        self.seq = 0
        self.idle = asyncio.Event()


class Driver:
    def __init__(self, warmup: float, seconds: float):
        self.warmup, self.seconds = warmup, seconds
        self.t_start = self.t_end = float("inf")
        self.deliveries = 0
        self.rtts: list[float] = []
        self.sent = 0
        self.refused: list = []
        self.stopping = False

    def send(self, client, content: str):
        self.sent += 1
        body = b'{"chatUUID":"%s","senderUUID":"%s","content":"%s"}' % (
            client.chat.encode(), client.user.encode(), content.encode())
        return client.send("/message", body)

    def on_message(self, client, body: bytes, t: float):
        event = json.loads(body)
        code = event.get("eventCode", 20)  # the floor echoes the /message body as it came
        if code == 10:
            client.chat, client.user = event["chatUUID"], event["senderUUID"]
            client.paired.set()
            return None
        if code != 20:
            self.refused.append(event)
            return None
        if self.t_start <= t < self.t_end:
            self.deliveries += 1
        if event["senderUUID"] == client.user:
            return None  # its own message, delivered back to it
        dialog = client.dialog
        content = event["content"]
        if client is dialog.b:
            return self.send(client, "re " + content)
        # A reads B's answer: one round trip.
        if dialog.sent_at >= self.t_start and t < self.t_end:
            self.rtts.append(t - dialog.sent_at)
        if self.stopping:
            dialog.idle.set()
            return None
        return self.ping(dialog)

    def ping(self, dialog):
        dialog.seq += 1
        dialog.sent_at = time.perf_counter()
        return self.send(dialog.a, f"{dialog.seq} {TEXT}")

    async def pair(self, url_a: str, url_b: str, code: str) -> Dialog:
        clients = []
        for url in (url_a, url_b):
            c = await h.StompClient(url, self.on_message).open()
            c.paired = asyncio.Event()
            clients.append(c)
        a, b = clients
        start = {"name": "bench", "languageCode": code}
        await asyncio.wait_for(await a.send("/start", start, receipt="start"), 60)
        await b.send("/start", start)
        await asyncio.wait_for(asyncio.gather(a.paired.wait(), b.paired.wait()), 60)
        dialog = Dialog(a, b)
        a.dialog = b.dialog = dialog
        return dialog

    async def run(self, pairs: list[tuple[str, str]], codes: list[str]) -> dict:
        sem = asyncio.Semaphore(20)

        async def pair(i):
            async with sem:
                return await self.pair(*pairs[i], codes[i])

        dialogs = await asyncio.gather(*(pair(i) for i in range(len(pairs))))
        me = os.getpid()
        cpu0 = h.cpu_seconds(me)
        for d in dialogs:
            await self.ping(d)
        await asyncio.sleep(self.warmup)
        self.t_start = time.perf_counter()
        cpu1 = h.cpu_seconds(me)
        await asyncio.sleep(self.seconds)
        self.t_end = time.perf_counter()
        cpu2 = h.cpu_seconds(me)
        self.stopping = True
        try:
            await asyncio.wait_for(asyncio.gather(*(d.idle.wait() for d in dialogs)), 30)
            drained = True
        except asyncio.TimeoutError:
            drained = False
        for d in dialogs:
            await d.a.close()
            await d.b.close()
        return {
            "deliveries": self.deliveries, "seconds": self.t_end - self.t_start, "rtts": self.rtts,
            "sent": self.sent, "refused": len(self.refused), "refused_sample": self.refused[:3],
            "drained": drained, "client_cpu": (cpu2 - cpu1) / (self.t_end - self.t_start),
            "pairing_cpu_s": cpu1 - cpu0,
        }


def role_client(config: dict) -> None:
    h.raise_nofile()
    driver = Driver(config["warmup"], config["seconds"])
    result = asyncio.run(driver.run(config["pairs"], config["codes"]))
    print(json.dumps(result))


# The orchestrator


def spread(urls: list[str], dialogs: int) -> list[tuple[str, str]]:
    """Dialog i: A on server i % n, B on server (i // 2) % n: with two servers half of the
    dialogs have both users on one process and half cross, and each server holds half."""
    n = len(urls)
    return [(urls[i % n], urls[(i // 2) % n]) for i in range(dialogs)]


class Target:
    """One configuration under test: its servers, and how to count its stored messages."""

    def __init__(self, label: str, servers: list[h.Daphne], count_messages=None):
        self.label = label
        self.servers = servers
        self.count_messages = count_messages
        self.rounds: list[dict] = []

    def urls(self) -> list[str]:
        return [s.url for s in self.servers]


def run_round(target: Target, args, code_offset: int) -> dict:
    per_client = [[] for _ in range(args.clients)]
    pairs = spread(target.urls(), args.dialogs)
    for i, pair in enumerate(pairs):
        per_client[i % args.clients].append((i, pair))
    procs = []
    cpu_before = {s.pid: h.cpu_seconds(s.pid) for s in target.servers}
    for chunk in per_client:
        config = {
            "pairs": [p for _, p in chunk], "codes": [CODES[code_offset + i] for i, _ in chunk],
            "warmup": args.warmup, "seconds": args.seconds,
        }
        procs.append(subprocess.Popen([h.PYTHON, __file__, "--role", "client", json.dumps(config)], cwd=h.REPO,
                                      stdout=subprocess.PIPE, text=True, preexec_fn=h.raise_nofile))
    wall0 = time.monotonic()
    outs = [p.communicate(timeout=args.warmup + args.seconds + 300)[0] for p in procs]
    wall = time.monotonic() - wall0
    for p, out in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"{target.label}: client process failed ({p.returncode}): {out[-2000:]}")
    results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    server_cpu = sum(h.cpu_seconds(s.pid) - cpu_before[s.pid] for s in target.servers)
    seconds = h.median([r["seconds"] for r in results])
    rtts = [x for r in results for x in r["rtts"]]
    return {
        "deliveries_per_s": sum(r["deliveries"] / r["seconds"] for r in results),
        "rtt_p50": h.percentile(rtts, 50), "rtt_p99": h.percentile(rtts, 99), "rtt_n": len(rtts),
        "sent": sum(r["sent"] for r in results), "refused": sum(r["refused"] for r in results),
        "refused_sample": [x for r in results for x in r["refused_sample"]][:3],
        "drained": all(r["drained"] for r in results),
        "client_cpu": sum(r["client_cpu"] for r in results),
        # Server CPU over the whole round (pairing and drain included), per wall second.
        "server_cpu": server_cpu / wall, "seconds": seconds,
    }


def report(targets: list[Target], reference: Target, title: str) -> dict:
    print(f"\n{title}  (medians over rounds; CPU in cores busy, server over the whole round)")
    print(f"{'configuration':<34} {'deliv/s':>9} {'ratio':>7} {'RTT p50':>9} {'RTT p99':>9} {'srv CPU':>8} {'cli CPU':>8}  per-round deliv/s")
    ref = h.median([r["deliveries_per_s"] for r in reference.rounds])
    summary = {}
    for t in targets:
        rate = h.median([r["deliveries_per_s"] for r in t.rounds])
        p50 = h.median([r["rtt_p50"] for r in t.rounds])
        p99 = h.median([r["rtt_p99"] for r in t.rounds])
        scpu = h.median([r["server_cpu"] for r in t.rounds])
        ccpu = h.median([r["client_cpu"] for r in t.rounds])
        per_round = " ".join(f"{r['deliveries_per_s']:.0f}" for r in t.rounds)
        summary[t.label] = {"deliveries_per_s": rate, "ratio": rate / ref, "rtt_p50_ms": p50 * 1e3, "rtt_p99_ms": p99 * 1e3}
        print(f"{t.label:<34} {rate:>9.0f} {rate / ref:>6.2f}x {p50 * 1e3:>6.2f} ms {p99 * 1e3:>6.2f} ms {scpu:>8.2f} {ccpu:>8.2f}  {per_round}")
    return summary


def check_persisted(target: Target) -> bool:
    sent = sum(r["sent"] for r in target.rounds)
    refused = sum(r["refused"] for r in target.rounds)
    stored = target.count_messages()
    drained = all(r["drained"] for r in target.rounds)
    ok = stored == sent and refused == 0 and drained
    print(f"{target.label}: messages sent {sent}, stored in the database {stored}, refused {refused}, "
          f"all answered {drained} -> {'every message persisted' if ok else 'NOT every message persisted'}")
    if refused:
        print(f"  refusals, e.g. {target.rounds[0]['refused_sample'] or [r['refused_sample'] for r in target.rounds]}")
    return ok


def sqlite_counter(db: dict):
    import sqlite3

    def count() -> int:
        with sqlite3.connect(db["RANDOMCHAT_SQLITE_PATH"]) as conn:
            return conn.execute("SELECT count(*) FROM dialogs_message").fetchone()[0]

    return count


def postgres_counter(db: dict):
    import psycopg

    def count() -> int:
        with psycopg.connect(db["DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
            return conn.execute("SELECT count(*) FROM dialogs_message").fetchone()[0]

    return count


def run_rounds(targets: list[Target], args) -> None:
    rng = random.Random(args.seed)
    offset = 0
    for round_no in range(args.rounds):
        order = list(targets)
        rng.shuffle(order)
        for t in order:
            r = run_round(t, args, offset)
            offset += args.dialogs
            t.rounds.append(r)
            print(f"round {round_no + 1} {t.label:<34} {r['deliveries_per_s']:>8.0f} deliveries/s, RTT p50 "
                  f"{r['rtt_p50'] * 1e3:.2f} ms p99 {r['rtt_p99'] * 1e3:.2f} ms ({r['rtt_n']} round trips), "
                  f"server CPU {r['server_cpu']:.2f}, client CPU {r['client_cpu']:.2f}, load {h.load_average()}", flush=True)


def randomchat_server(db: dict, name: str, proposed: bool = False, redis: bool = False, tree=h.REPO) -> h.Daphne:
    """randomchat as it is (or as another work tree of it has it, on the same schema), or with
    the changes of bench/proposed_asgi.py."""
    extra = dict(h.RAISED_RATE_LIMITS)
    if redis:
        extra["REDIS_URL"] = h.redis_url()
    if proposed:
        return h.Daphne(h.server_env(db, extra), app="proposed_asgi:application", name=name,
                        pythonpath=[str(h.BENCH)]).start()
    return h.Daphne(h.server_env(db, extra), name=name, cwd=tree).start()


def default_mode(args) -> None:
    db = h.sqlite_database("dialogs")
    servers = []
    try:
        randomchat = randomchat_server(db, "dialogs-randomchat")
        servers.append(randomchat)
        floor = h.Daphne(h.server_env({}), app="floor:application", name="dialogs-floor",
                         pythonpath=[str(h.BENCH), str(h.REPO)]).start()
        servers.append(floor)
        rc = Target("randomchat (SQLite, in-memory layer)", [randomchat], sqlite_counter(db))
        fl = Target("floor (bench/floor.py, in-memory)", [floor])
        targets = [fl, rc]
        run_rounds(targets, args)
    finally:
        for server in servers:
            server.stop()
    summary = report(targets, fl, f"{args.dialogs} dialogs, {args.seconds:g} s per round, {args.rounds} rounds per server")
    persisted = {t.label: check_persisted(t) for t in targets[1:]}
    for t in targets[1:]:
        ratio = summary[t.label]["ratio"]
        ok = persisted[t.label]
        print(f"goal for {t.label}: >= 1.0x the floor's deliveries/s with every message persisted: {ratio:.2f}x, "
              f"persisted {ok} -> {'MET' if ratio >= 1.0 and ok else 'MISSED'}")


def scale_mode(args) -> None:
    sqlite_db = h.sqlite_database("dialogs-scale")
    pg2 = h.postgres_database("bench_randomchat_scale2")
    pg1 = h.postgres_database("bench_randomchat_scale1")
    servers = []
    try:
        one = randomchat_server(sqlite_db, "scale-sqlite")
        servers.append(one)
        two = [randomchat_server(pg2, f"scale-pg-{i}", redis=True) for i in range(2)]
        servers += two
        one_pg = randomchat_server(pg1, "scale-pg1", redis=True)
        servers.append(one_pg)
        base = Target("1 daphne, SQLite + in-memory", [one], sqlite_counter(sqlite_db))
        scaled = Target("2 daphnes, PostgreSQL + Redis", two, postgres_counter(pg2))
        single_pg = Target("1 daphne, PostgreSQL + Redis", [one_pg], postgres_counter(pg1))
        targets = [base, scaled, single_pg]
        if not args.no_proposed:
            pg2_p = h.postgres_database("bench_randomchat_scale2p")
            two_p = [randomchat_server(pg2_p, f"scale-pg-p{i}", proposed=True, redis=True) for i in range(2)]
            servers += two_p
            scaled_p = Target("2 daphnes, PG + Redis, proposed_asgi", two_p, postgres_counter(pg2_p))
            targets.append(scaled_p)
        run_rounds(targets, args)
    finally:
        for s in servers:
            s.stop()
    summary = report(targets, base,
                     f"{args.dialogs} dialogs, {args.seconds:g} s per round, {args.rounds} rounds, {args.clients} client processes")
    for t in targets:
        check_persisted(t)
    ratio = summary[scaled.label]["ratio"]
    print(f"goal: 2 processes over Redis + PostgreSQL >= 1.6x 1 process in-memory/SQLite: {ratio:.2f}x -> "
          f"{'MET' if ratio >= 1.6 else 'MISSED'}")
    gain = summary[scaled.label]["deliveries_per_s"] / summary[single_pg.label]["deliveries_per_s"]
    print(f"the second process alone (2 vs 1 daphne, both PostgreSQL + Redis): {gain:.2f}x")
    if not args.no_proposed:
        print(f"with bench/proposed_asgi.py (PostgreSQL changes only): 2 x PG + Redis vs 1 x SQLite "
              f"{summary[scaled_p.label]['ratio']:.2f}x")
    layers(args)


# The channel layers alone

LAYER_KINDS = {
    "InMemoryChannelLayer": "channels.layers.InMemoryChannelLayer",
    "RedisChannelLayer": "channels_redis.core.RedisChannelLayer",
    "RedisPubSubChannelLayer": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "randomchat RedisChannelLayer": "randomchat.layers.RedisChannelLayer",
}


def make_layer(kind: str):
    if str(h.REPO) not in sys.path:
        sys.path.append(str(h.REPO))  # after bench/: randomchat.layers imports no `dialogs`
    module, _, name = LAYER_KINDS[kind].rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    if kind == "InMemoryChannelLayer":
        return cls(capacity=100000)
    if kind == "RedisPubSubChannelLayer":
        return cls(hosts=[h.redis_url()])
    return cls(hosts=[{"address": h.redis_url(), "socket_timeout": 30}], capacity=100000, expiry=30)


async def layer_throughput(kind: str, messages: int, window: int, across: bool) -> dict:
    """send -> receive on one channel, `window` messages in flight, then one at a time. The
    sender is the receiving layer itself or (across) a second instance, as another process."""
    receiver = make_layer(kind)
    sender = make_layer(kind) if across else receiver
    message = {"type": "chat.event", "chat": "x" * 36, "code": 20, "body": b"y" * 200}
    channel = await receiver.new_channel()
    # A consumer waits in receive() before anyone sends to it (pub/sub: subscribed by then).
    first = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.sleep(0.2)
    await sender.send(channel, message)
    await first
    sem = asyncio.Semaphore(window)

    async def receive():
        for _ in range(messages):
            await receiver.receive(channel)
            sem.release()

    async def send():
        for _ in range(messages):
            await sem.acquire()
            await sender.send(channel, message)

    t0 = time.perf_counter()
    await asyncio.gather(receive(), send())
    out = {"per_s": messages / (time.perf_counter() - t0)}
    lat = []
    for _ in range(min(messages, 500)):
        t = time.perf_counter()
        await sender.send(channel, message)
        await receiver.receive(channel)
        lat.append(time.perf_counter() - t)
    out["p50_us"] = h.percentile(lat, 50) * 1e6
    # The consumer stops: its waiting receive is cancelled, as channels does.
    last = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.sleep(0.05)
    last.cancel()
    await asyncio.gather(last, return_exceptions=True)
    for layer in {receiver, sender}:
        if hasattr(layer, "flush"):
            await layer.flush()
    return out


def layers(args) -> None:
    messages = 2000 if args.quick else 10000
    reps = 3 if args.quick else 5
    print(f"\nchannel layers alone, one process, {messages} messages of ~250 bytes, 100 in flight, median of {reps}; "
          f"sent by the receiving layer itself / by a second instance (another process), load {h.load_average()}:")
    print(f"{'layer':<30} {'same: send+receive/s':>21} {'p50 1 at a time':>16} {'across: send+receive/s':>23} {'p50 1 at a time':>16}")
    for kind in LAYER_KINDS:
        row = f"{kind:<30}"
        for across in (False, True):
            if across and kind == "InMemoryChannelLayer":
                row += f" {'n/a (one process)':>23} {'':>16}"
                continue
            runs = [asyncio.run(layer_throughput(kind, messages, 100, across)) for _ in range(reps)]
            row += f" {h.median([r['per_s'] for r in runs]):>{23 if across else 21}.0f}"
            row += f" {h.median([r['p50_us'] for r in runs]):>13.0f} us"
        print(row, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s")
    parser.add_argument("--scale", action="store_true", help="2 processes on PostgreSQL + Redis vs 1 on SQLite, and the layers")
    parser.add_argument("--layers-only", action="store_true", help="only the channel-layer micro-benchmark")
    parser.add_argument("--dialogs", type=int, default=50)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--clients", type=int, help="client processes (default 1; 2 with --scale)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-proposed", action="store_true", help="leave out the servers with bench/proposed_asgi.py")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role == "client":
        role_client(json.loads(rest[0]))
        return
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.clients = args.clients or (2 if args.scale else 1)
    h.raise_nofile()
    h.header("dialogs: deliveries per second and round trips" + (" (scale-out)" if args.scale else ""))
    print(f"# {args.dialogs} dialogs, {args.warmup:g} s warm-up + {args.seconds:g} s measured per round, {args.rounds} rounds, "
          f"{args.clients} client process(es); randomchat's rate limits raised (RANDOMCHAT_RATE_*)", flush=True)
    if args.layers_only:
        layers(args)
    elif args.scale:
        scale_mode(args)
    else:
        default_mode(args)


if __name__ == "__main__":
    main()
