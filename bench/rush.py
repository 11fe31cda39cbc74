"""Pairing at crowd speed: 2*D users send /start at the same moment, randomchat beside the floor.

    .venv/bin/python bench/rush.py              # 200 dialogs, 5 rounds per configuration
    .venv/bin/python bench/rush.py --quick      # 2 rounds, fewer idle pairs
    .venv/bin/python bench/rush.py --quick --before /tmp/main-tree   # also main's servers, same run

Configurations, all running side by side for the whole run:

- floor: bench/floor.py (one daphne, in-memory layer; pairs from an in-process dict);
- randomchat, 1 daphne, embedded default (a fresh SQLite file, the in-memory layer);
- randomchat, 1 daphne, PostgreSQL + Redis (randomchat.layers.RedisChannelLayer);
- randomchat, 2 daphnes, PostgreSQL + Redis: user A of every dialog on the first process,
  user B on the second, so every pair spans the two processes.

And, for the idle pair only, a second reference: bench/floor_stored.py on two daphnes (the
floor, but every pair stored in PostgreSQL before its 10s and the partner's 10 carried to
its process on the commit's NOTIFY, and little else): what keeping PROTOCOL.md §5 across
processes costs by itself; the 2 daphnes' idle pair is also given against it. It runs twice:
deciding each pair in its own code from what it read, in two round trips as randomchat does,
and deciding it inside PostgreSQL, in one (FLOOR_ONE_FLIGHT).

A round: a client process (asyncio `websockets`, randomchat's FrameParser) opens 2*D
connections, each CONNECTs and SUBSCRIBEs, and reports ready; then every connection
writes its /start at once (dialog i's two users share a language code nobody else uses,
so who pairs with whom is known). Per dialog, the latency is from the later of its two
/start writes to the later of its two 10s; pairs/s is D over the time from the first
/start written to the last 10 read. The server's CPU seconds (user + system, every daphne
of the configuration, and the private PostgreSQL and Redis for the configurations that
use them) are read just before the /starts and once the last 10 is in. Then the clients
close (their dialogs end) and the next round waits for the servers to go quiet. Rounds
of the configurations are interleaved in a shuffled order; figures are medians over the
rounds, p99 is over every dialog of every round.

Then the idle pair: on each configuration, one user waits (its /start acknowledged by a
RECEIPT), the clock starts as the second writes /start and stops at the later 10;
repeated, interleaved over the configurations, median reported.

The server's rate limits are raised (RANDOMCHAT_RATE_*), as in every load benchmark here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

# bench/dialogs.py by path: its module name is also the name of randomchat's Django app.
_spec = importlib.util.spec_from_file_location("bench_dialogs", os.path.join(os.path.dirname(os.path.abspath(__file__)), "dialogs.py"))
D = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(D)


# The client process


class Rush:
    def __init__(self, pairs: list[tuple[str, str]], codes: list[str]):
        self.pairs, self.codes = pairs, codes
        self.paired_at: dict[int, list[float]] = {}
        self.started_at: dict[int, list[float]] = {}
        self.refused: list = []
        self.done = asyncio.Event()

    def on_message(self, client, body: bytes, t: float) -> None:
        event = json.loads(body)
        if event["eventCode"] != 10:
            self.refused.append(event)
            return
        got = self.paired_at.setdefault(client.dialog, [])
        got.append(t)
        if len(got) == 2 and len(self.paired_at) == len(self.pairs) and all(len(v) == 2 for v in self.paired_at.values()):
            self.done.set()

    async def open(self) -> list:
        sem = asyncio.Semaphore(50)  # handshakes in flight: daphne's listen backlog is 50

        async def one(url: str, dialog: int):
            async with sem:
                client = await h.StompClient(url, self.on_message).open()
                client.dialog = dialog
                return client

        return await asyncio.gather(*(one(url, i) for i, pair in enumerate(self.pairs) for url in pair))

    async def run(self, clients: list, timeout: float) -> dict:
        bodies = [json.dumps({"name": "rush", "languageCode": self.codes[c.dialog]}).encode() for c in clients]
        t0 = time.perf_counter()
        for client, body in zip(clients, bodies):
            await client.send("/start", body)
            self.started_at.setdefault(client.dialog, []).append(time.perf_counter())
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        latencies = [max(self.paired_at[i]) - max(self.started_at[i]) for i in self.paired_at if len(self.paired_at[i]) == 2]
        last = max((max(v) for v in self.paired_at.values()), default=float("nan"))
        return {"pairs": len(latencies), "seconds": last - t0, "latencies": latencies,
                "refused": len(self.refused), "refused_sample": self.refused[:3]}


def role_client(config: dict) -> None:
    """Open, say READY, wait for GO on stdin, rush, print the result as JSON, then close
    (the result goes first: the server's CPU is read when it comes, before the leaves)."""
    h.raise_nofile()

    async def main() -> None:
        rush = Rush(config["pairs"], config["codes"])
        clients = await rush.open()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps(await rush.run(clients, config["timeout"])), flush=True)
        await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(main())


# The orchestrator


class Config:
    """One configuration under test: its daphnes and the service processes it also uses."""

    def __init__(self, label: str, servers: list[h.Daphne], services: list[int] = (), *, floor: bool = False):
        self.label = label
        self.servers = servers
        self.services = list(services)
        self.floor = floor  # a reference: no /stop between idle pairs
        self.rounds: list[dict] = []
        self.idle: list[float] = []

    def pairs(self, dialogs: int) -> list[tuple[str, str]]:
        urls = [s.url for s in self.servers]
        return [(urls[0], urls[-1])] * dialogs  # A on the first process, B on the last

    def cpu(self) -> float:
        pids = [s.pid for s in self.servers] + [p for pid in self.services for p in _process_tree(pid)]
        return sum(_cpu_or_zero(pid) for pid in pids)


def _cpu_or_zero(pid: int) -> float:
    try:
        return h.cpu_seconds(pid)
    except FileNotFoundError:  # a PostgreSQL backend that ended meanwhile
        return 0.0


def _process_tree(pid: int) -> list[int]:
    """pid and its children (PostgreSQL's backends are children of the postmaster)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return [pid, *children]


def wait_quiet(configs: list[Config], limit: float = 20) -> None:
    """Until every server used under 5% of a core over half a second (its clients' leaves done)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = [c.cpu() for c in configs]
        time.sleep(0.5)
        if all(c.cpu() - b < 0.025 * max(1, len(c.servers)) for c, b in zip(configs, before)):
            return


def run_round(config: Config, args, code_offset: int) -> dict:
    client_config = {"pairs": config.pairs(args.dialogs), "codes": D.CODES[code_offset:code_offset + args.dialogs],
                     "timeout": args.timeout}
    proc = subprocess.Popen([h.PYTHON, __file__, "--role", "client", json.dumps(client_config)], cwd=h.REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=h.raise_nofile)
    ready = proc.stdout.readline()
    if ready.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{config.label}: the client did not open its connections: {ready!r}")
    cpu0 = config.cpu()
    proc.stdin.write("GO\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    cpu1 = config.cpu()
    proc.communicate(timeout=60)
    result = json.loads(line)
    result["cpu"] = cpu1 - cpu0
    result["pairs_per_s"] = result["pairs"] / result["seconds"] if result["pairs"] else 0.0
    if result["pairs"] != args.dialogs or result["refused"]:
        print(f"  {config.label}: only {result['pairs']} of {args.dialogs} pairs, {result['refused']} other events, "
              f"e.g. {result['refused_sample']}; logs: {[str(s.log_path) for s in config.servers]}", flush=True)
    return result


# The idle pair, in this process


class IdlePair:
    """Two connections to a configuration (A on its first process, B on its last)."""

    def __init__(self, config: Config, stop: bool):
        self.config, self.stop = config, stop
        self.futures: dict[tuple[int, int], asyncio.Future] = {}

    def on_message(self, client, body: bytes, t: float) -> None:
        event = json.loads(body)
        if event["eventCode"] == 10:
            client.chat, client.user = event["chatUUID"], event["senderUUID"]
        fut = self.futures.pop((id(client), event["eventCode"]), None)
        if fut is not None and not fut.done():
            fut.set_result(t)

    def expect(self, client, code: int) -> asyncio.Future:
        fut = self.futures[(id(client), code)] = asyncio.get_running_loop().create_future()
        return fut

    async def open(self) -> IdlePair:
        url_a, url_b = self.config.pairs(1)[0]
        self.a = await h.StompClient(url_a, self.on_message).open()
        self.b = await h.StompClient(url_b, self.on_message).open()
        self.n = 0
        return self

    async def pair(self) -> float:
        self.n += 1
        body = {"name": "idle", "languageCode": "en"}
        await asyncio.wait_for(await self.a.send("/start", body, receipt=f"r{self.n}"), 30)
        got = [self.expect(self.a, 10), self.expect(self.b, 10)]
        t0 = time.perf_counter()
        await self.b.send("/start", body)
        latency = max(await asyncio.wait_for(asyncio.gather(*got), 30)) - t0
        if self.stop:  # randomchat: a connection in a dialog must /stop before its next /start
            left = [self.expect(self.a, 30), self.expect(self.b, 30)]
            await self.a.send("/stop", {"chatUUID": self.a.chat, "senderUUID": self.a.user, "content": None})
            await asyncio.wait_for(asyncio.gather(*left), 30)
        return latency

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


async def measure_idle(configs: list[Config], repeats: int, seed: int) -> None:
    pairers = [await IdlePair(c, stop=not c.floor).open() for c in configs]
    for p in pairers:  # warm-up
        for _ in range(5):
            await p.pair()
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(pairers)
        for p in pairers:
            await asyncio.sleep(0.05)  # idle: nothing else in flight
            p.config.idle.append(await p.pair())
    for p in pairers:
        await p.close()


def report(configs: list[Config], floor: Config, idle_only: list[Config], args) -> None:
    ref_idle = h.median(floor.idle)
    if not args.rounds:
        print(f"\nidle pair only; load average {h.load_average()}")
        for c in configs + idle_only:
            idle = h.median(c.idle)
            print(f"{c.label:<50} {idle * 1e3:>7.2f} ms {idle / ref_idle:>5.2f}x  p90 "
                  f"{h.percentile(c.idle, 90) * 1e3:.2f} ms")
        report_stored_floor(configs, idle_only)
        return
    ref_rate = h.median([r["pairs_per_s"] for r in floor.rounds])
    print(f"\n{args.dialogs} dialogs ({2 * args.dialogs} users) per rush, {args.rounds} rounds per configuration; "
          f"load average {h.load_average()}")
    print(f"{'configuration':<50} {'pairs/s':>8} {'ratio':>6} {'p50':>9} {'p99':>9} {'CPU s/pair':>11} {'idle pair':>10} "
          f"{'ratio':>6}  per-round pairs/s")
    summary = {}
    for c in configs:
        rate = h.median([r["pairs_per_s"] for r in c.rounds])
        latencies = [x for r in c.rounds for x in r["latencies"]]
        cpu = h.median([r["cpu"] / max(1, r["pairs"]) for r in c.rounds])
        idle = h.median(c.idle)
        summary[c.label] = {"rate": rate, "p99": h.percentile(latencies, 99), "cpu": cpu, "idle": idle}
        missing = sum(args.dialogs - r["pairs"] for r in c.rounds)
        print(f"{c.label:<50} {rate:>8.0f} {rate / ref_rate:>5.2f}x {h.percentile(latencies, 50) * 1e3:>6.0f} ms "
              f"{h.percentile(latencies, 99) * 1e3:>6.0f} ms {cpu * 1e3:>8.2f} ms {idle * 1e3:>7.2f} ms {idle / ref_idle:>5.2f}x  "
              + " ".join(f"{r['pairs_per_s']:.0f}" for r in c.rounds) + (f"  ({missing} pairs missing)" if missing else ""))
    print("\ngoals:")
    for c in configs:
        if c is floor:
            continue
        s = summary[c.label]
        ok = s["rate"] >= 0.5 * ref_rate and s["p99"] <= 1.0
        print(f"  {c.label}: pairs/s >= 0.5x floor and p99 <= 1 s: {s['rate'] / ref_rate:.2f}x, "
              f"{s['p99'] * 1e3:.0f} ms -> {'MET' if ok else 'MISSED'}; idle pair <= 3x floor: "
              f"{s['idle'] / ref_idle:.2f}x -> {'MET' if s['idle'] <= 3 * ref_idle else 'MISSED'}")
    one, two = (summary.get(label) for label in (ONE_PG, TWO_PG))
    if one and two:
        print(f"  2 daphnes vs 1 on PostgreSQL + Redis: pairs/s {two['rate'] / one['rate']:.2f}x (goal >= 1), "
              f"CPU s/pair {two['cpu'] / one['cpu']:.2f}x -> {'MET' if two['rate'] >= one['rate'] else 'MISSED'}")
    report_stored_floor(configs, idle_only)


def report_stored_floor(configs: list[Config], idle_only: list[Config]) -> None:
    """How far the idle pair across processes is from a server that only stores its pairs."""
    for stored in idle_only:  # the stored floors, unless --only sqlite
        floor_idle = h.median(stored.idle)
        for two in (c for c in configs if c.label.endswith(TWO_PG)):
            two_idle = h.median(two.idle)
            print(f"  {two.label}: idle pair {two_idle / floor_idle:.2f}x that of '{stored.label}' "
                  f"({two_idle * 1e3:.2f} vs {floor_idle * 1e3:.2f} ms, {(two_idle - floor_idle) * 1e3:.2f} ms more)")


STORED = "floor stored in PostgreSQL, 2 daphnes"
STORED_ONE_FLIGHT = "floor stored, decided in PostgreSQL, 2 daphnes"
ONE_PG = "randomchat, 1 daphne, PostgreSQL + Redis"
TWO_PG = "randomchat, 2 daphnes, PostgreSQL + Redis"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 20 idle pairs")
    parser.add_argument("--dialogs", type=int, default=200)
    parser.add_argument("--rounds", type=int, help="rushes per configuration; 0: the idle pair only")
    parser.add_argument("--idle", type=int, help="idle pairs per configuration (default 50)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a rush may take")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="leave out the other backend")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--before", metavar="TREE",
                        help="also run the randomchat configurations from this work tree (e.g. a worktree of main; "
                             "same schema), labelled 'before:', for a before/after in one run")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role == "client":
        role_client(json.loads(rest[0]))
        return
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    args.idle = args.idle or (20 if args.quick else 50)
    h.raise_nofile()
    h.header("pairing rush: pairs per second and latency from /start to both 10s")
    print(f"# {args.dialogs} dialogs per rush, {args.rounds} rounds, {args.idle} idle pairs per configuration; "
          f"randomchat's rate limits raised (RANDOMCHAT_RATE_*)", flush=True)
    servers = []
    try:
        floor_server = h.Daphne(h.server_env({}), app="floor:application", name="rush-floor",
                                pythonpath=[str(h.BENCH), str(h.REPO)]).start()
        servers.append(floor_server)
        floor = Config("floor (bench/floor.py, in-memory)", [floor_server], floor=True)
        configs = [floor]
        idle_only = []  # references for the idle pair alone
        if args.only != "sqlite":
            for flights, label in (("2", STORED), ("1", STORED_ONE_FLIGHT)):
                stored_db = h.postgres_database(f"bench_floor_stored{flights}")
                env = h.server_env({}, {"FLOOR_DATABASE_URL": stored_db["DATABASE_URL"],
                                        "FLOOR_ONE_FLIGHT": "1" if flights == "1" else "0"})
                stored = [h.Daphne(env, app="floor_stored:application", name=f"rush-floor-stored{flights}-{i}",
                                   pythonpath=[str(h.BENCH), str(h.REPO)]).start() for i in range(2)]
                servers += stored
                idle_only.append(Config(label, stored, floor=True))
        trees = [("", h.REPO)] + ([("before: ", args.before)] if args.before else [])
        for tag, tree in trees:
            name = f"rush{'-before' if tag else ''}"
            if args.only != "postgres":
                one = D.randomchat_server(h.sqlite_database(name), f"{name}-sqlite", tree=tree)
                servers.append(one)
                configs.append(Config(f"{tag}randomchat, 1 daphne, embedded default", [one]))
            if args.only != "sqlite":
                db_name = name.replace("-", "_")
                pg1 = D.randomchat_server(h.postgres_database(f"bench_randomchat_{db_name}1"), f"{name}-pg1", redis=True,
                                          tree=tree)
                db2 = h.postgres_database(f"bench_randomchat_{db_name}2")
                two = [D.randomchat_server(db2, f"{name}-pg2-{i}", redis=True, tree=tree) for i in range(2)]
                servers += [pg1, *two]
                backing = h.service_pids()
                configs += [Config(f"{tag}{ONE_PG}", [pg1], backing), Config(f"{tag}{TWO_PG}", two, backing)]
        rng = random.Random(args.seed)
        offset = 0
        for round_no in range(args.rounds):
            order = list(configs)
            rng.shuffle(order)
            for config in order:
                wait_quiet(configs)
                r = run_round(config, args, offset)
                offset += args.dialogs
                config.rounds.append(r)
                print(f"round {round_no + 1} {config.label:<50} {r['pairs_per_s']:>6.0f} pairs/s, p99 "
                      f"{h.percentile(r['latencies'], 99) * 1e3:.0f} ms, CPU {r['cpu'] / max(1, r['pairs']) * 1e3:.2f} ms/pair, "
                      f"load {h.load_average()}", flush=True)
        wait_quiet(configs)
        asyncio.run(measure_idle(configs + idle_only, args.idle, args.seed))
        for s in servers:
            errors = s.log_errors()
            if errors:
                print(f"{s.name}: {len(errors)} error lines in its log, e.g. {errors[0]}")
    finally:
        for s in servers:
            s.stop()
    report(configs, floor, idle_only, args)


if __name__ == "__main__":
    main()
