"""Server memory per idle client: connected, subscribed and waiting in the pool.

    .venv/bin/python bench/idle.py            # 2,000 clients, 3 runs (a fresh daphne each)
    .venv/bin/python bench/idle.py --quick    # 500 clients, 1 run
    .venv/bin/python bench/idle.py --clients 5000
    .venv/bin/python bench/idle.py --floor    # the same against bench/floor.py, for comparison

Each run starts daphne (randomchat on a fresh SQLite file, in-memory channel layer, default
rate limits: each client sends one /start), warms it up with 50 clients that connect,
/start and leave (so that imports, the database connection, the thread pool and the
process registration are paid for), then reads its VmRSS from /proc/<pid>/status
(median of 5 readings over 1 s) before and after N clients:

1. open a WebSocket, CONNECT with heart-beat 10000,10000 (stompjs' default, so every
   connection has its heart-beat timer) and SUBSCRIBE to /user/dialog;
2. SEND /start with a receipt and wait for it: every client is male and wants a female,
   so nobody matches and all N wait in the pool (checked in the database).

The clients (one process, this one) send a heart-beat EOL every 5 s, as required. The
figure is (RSS_after - RSS_before) / N in KiB; also shown after step 1 alone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import string
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

FLOOR = False  # --floor: measure bench/floor.py instead
CODES = ["".join(c) for c in itertools.product(string.ascii_lowercase, repeat=3)]
START = {"name": "idle", "languageCode": "en", "userAttributes": {"gender": "male", "age": 30},
         "targetAttributes": {"gender": "female", "age": None}}


async def rss(pid: int, samples: int = 5, every: float = 0.2) -> int:
    values = []
    for _ in range(samples):
        values.append(h.rss_kib(pid))
        await asyncio.sleep(every)
    return int(h.median(values))


async def heartbeats(clients: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for c in list(clients):
            if not c.closed.done():
                try:
                    await c.send_raw("\n")
                except Exception:  # noqa: BLE001
                    pass
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except asyncio.TimeoutError:
            pass


async def connect_all(url: str, n: int, concurrency: int, clients: list) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            c = await h.StompClient(url, heartbeat="10000,10000").open()
            clients.append(c)

    await asyncio.gather(*(one(i) for i in range(n)))


async def start_all(clients: list, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    start = dict(START)

    async def one(i, c):
        async with sem:
            # The floor pairs any two /starts of one language: there, each client its own.
            body = dict(start, languageCode=CODES[i % len(CODES)]) if FLOOR else start
            await asyncio.wait_for(await c.send("/start", body, receipt=f"s{i}"), 120)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))


def waiting_users(db: dict) -> int:
    with sqlite3.connect(db["RANDOMCHAT_SQLITE_PATH"]) as conn:
        return conn.execute("SELECT count(*) FROM matching_pooluser WHERE status = 'waiting'").fetchone()[0]


async def measure_checked(server: h.Daphne, db: dict, n: int, concurrency: int) -> dict:
    # The database is checked while every client still waits.
    warm: list = []
    await connect_all(server.url, 50, concurrency, warm)
    await start_all(warm, concurrency)
    for c in warm:
        await c.close()
    await asyncio.sleep(2)
    before = await rss(server.pid)
    clients: list = []
    stop = asyncio.Event()
    beats = asyncio.get_running_loop().create_task(heartbeats(clients, stop))
    t0 = time.monotonic()
    await connect_all(server.url, n, concurrency, clients)
    t1 = time.monotonic()
    await asyncio.sleep(1)
    connected = await rss(server.pid)
    await start_all(clients, concurrency)
    t2 = time.monotonic()
    await asyncio.sleep(2)
    after = await rss(server.pid)
    waiting = n if FLOOR else waiting_users(db)
    alive = sum(not c.closed.done() for c in clients)
    stop.set()
    await beats
    for c in clients:
        await c.close()
    return {"before": before, "connected": connected, "after": after, "alive": alive, "waiting": waiting,
            "connect_s": t1 - t0, "start_s": t2 - t1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 clients, 1 run")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--concurrency", type=int, default=50, help="clients connecting at once")
    parser.add_argument("--floor", action="store_true",
                        help="measure bench/floor.py (daphne + channels, no chat state) the same way, for comparison")
    args = parser.parse_args()
    global FLOOR
    FLOOR = args.floor
    n = args.clients or (500 if args.quick else 2000)
    runs = args.runs or (1 if args.quick else 3)
    h.raise_nofile()
    h.header("memory per idle (connected, subscribed, waiting) client" + (" of bench/floor.py" if FLOOR else ""))
    print(f"# {n} clients per run, {runs} run(s), each on a fresh daphne + SQLite file; default rate limits", flush=True)
    per_client, per_connected = [], []
    for i in range(runs):
        db = h.sqlite_database("idle")
        if FLOOR:
            server = h.Daphne(h.server_env({}), app="floor:application", name="idle-floor",
                              pythonpath=[str(h.BENCH), str(h.REPO)]).start()
        else:
            server = h.Daphne(h.server_env(db), name="idle").start()
        try:
            r = asyncio.run(measure_checked(server, db, n, args.concurrency))
            errors = server.log_errors()
        finally:
            server.stop()
        kib = (r["after"] - r["before"]) / n
        kib_connected = (r["connected"] - r["before"]) / n
        per_client.append(kib)
        per_connected.append(kib_connected)
        print(f"run {i + 1}: RSS before {r['before']} KiB, after connect+subscribe {r['connected']} KiB, after /start "
              f"{r['after']} KiB; {r['waiting']} users waiting, {r['alive']}/{n} connections open, "
              f"server log error lines {len(errors)}; connect {r['connect_s']:.1f} s, /start {r['start_s']:.1f} s "
              f"-> {kib:.1f} KiB per client ({kib_connected:.1f} KiB of it for connect+subscribe)", flush=True)
        if r["waiting"] != n or r["alive"] != n:
            print("  WARNING: not every client was connected and waiting at the measurement")
    med = h.median(per_client)
    print(f"\nmedian over {runs} run(s): {med:.1f} KiB per waiting client "
          f"(connect+subscribe alone: {h.median(per_connected):.1f} KiB); load average now {h.load_average()}")
    print(f"goal: <= 40 KiB per client: {med:.1f} KiB -> {'MET' if med <= 40 else 'MISSED'}")


if __name__ == "__main__":
    main()
