"""Chat latency while /metrics and /healthz are scraped hard (issue #14, item 8).

One daphne on the embedded default (SQLite, in-memory layer). DIALOGS dialogs each send a
message every INTERVAL seconds; the latency of each (A's send to B's receipt of its 20) is
measured for SECONDS quietly, then for SECONDS while another process requests /metrics and
/healthz (alternating, with the metrics token) RATE times a second. Prints p50/p99 of both,
and the server's CPU time per scrape, measured first with no chat running.

    .venv/bin/python bench/scrape.py [--rate 120] [--seconds 10] [--dialogs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time

import harness as h

TOKEN = "bench-metrics-token"
SCRAPER = r"""
import sys, threading, time, http.client
port, rate, seconds, token = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
THREADS = 8  # requests overlap, as several scrapers (or one flooder) make them
statuses, lock, start = {}, threading.Lock(), time.monotonic()

def scrape(k):
    conn, n = http.client.HTTPConnection("127.0.0.1", port, timeout=30), 0
    while time.monotonic() - start < seconds:
        path = "/metrics" if (n + k) % 2 == 0 else "/healthz"
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            response = conn.getresponse()
            response.read()
            status = response.status
        except Exception as exc:
            conn.close()
            conn, status = http.client.HTTPConnection("127.0.0.1", port, timeout=30), type(exc).__name__
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
        n += 1
        delay = start + n * THREADS / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

threads = [threading.Thread(target=scrape, args=(k,)) for k in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
print(round(sum(v for v in statuses.values()) / (time.monotonic() - start)), statuses)
"""


async def chat(url: str, dialogs: int, interval: float, seconds: float, scrape) -> tuple[list, list, str]:
    sent: dict[str, float] = {}
    latencies: list[float] = []

    def on_message(client, body, t):
        event = json.loads(body)
        if event["eventCode"] == 10:
            client.chat, client.user = event["chatUUID"], event["senderUUID"]
            client.paired.set()
        elif event["eventCode"] == 20 and event["senderUUID"] != client.user:
            started = sent.pop(event["content"], None)
            if started is not None:
                latencies.append(t - started)

    pairs = []
    for i in range(dialogs):
        a, b = h.StompClient(url, on_message), h.StompClient(url, on_message)
        for c in (a, b):
            await c.open()
            c.paired = asyncio.Event()
        start = {"languageCode": "b" + chr(97 + i // 26) + chr(97 + i % 26)}
        await asyncio.wait_for(await a.send("/start", start, receipt="s"), 30)
        await b.send("/start", start)
        await asyncio.wait_for(asyncio.gather(a.paired.wait(), b.paired.wait()), 30)
        pairs.append((a, b))

    async def talk(a, until: float) -> None:
        seq = 0
        while time.perf_counter() < until:
            seq += 1
            content = f"{id(a)}-{seq}"
            sent[content] = time.perf_counter()
            await a.send("/message", {"chatUUID": a.chat, "senderUUID": a.user, "content": content})
            await asyncio.sleep(interval)

    async def phase() -> list[float]:
        latencies.clear()
        until = time.perf_counter() + seconds
        await asyncio.gather(*(talk(a, until) for a, _ in pairs))
        await asyncio.sleep(1)
        return list(latencies)

    quiet = await phase()
    scraper = scrape()
    flooded = await phase()
    scraped = scraper.communicate(timeout=60)[0].strip()
    for a, b in pairs:
        await a.close()
        await b.close()
    return quiet, flooded, scraped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=120)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--dialogs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    h.header("chat latency under a /metrics + /healthz flood")
    database = h.sqlite_database("scrape")
    env = h.server_env(database, {"RANDOMCHAT_METRICS_TOKEN": TOKEN, "RANDOMCHAT_RATE_MESSAGE_PER_S": "100000",
                                   "RANDOMCHAT_RATE_MESSAGE_BURST": "100000"})
    server = h.Daphne(env).start()
    try:
        def scrape():
            return subprocess.Popen(
                [h.PYTHON, "-c", SCRAPER, str(server.port), str(args.rate), str(args.seconds), TOKEN],
                stdout=subprocess.PIPE, text=True,
            )

        cpu = h.cpu_seconds(server.pid)
        alone = scrape().communicate(timeout=60)[0].strip()
        per_scrape = (h.cpu_seconds(server.pid) - cpu) / (int(alone.split()[0]) * args.seconds)
        quiet, flooded, scraped = asyncio.run(chat(server.url, args.dialogs, args.interval, args.seconds, scrape))
    finally:
        server.stop()
    print(f"# load average {h.load_average()}; scraper alone: {alone}, with the chat: {scraped} (requests/s, statuses)")
    print(f"# server CPU per scrape: {per_scrape * 1000:.2f} ms")
    for label, values in (("quiet", quiet), (f"scraped {args.rate:g}/s", flooded)):
        print(f"{label:>16}: {len(values)} messages, p50 {h.ms(h.percentile(values, 50))}, "
              f"p99 {h.ms(h.percentile(values, 99))}")


if __name__ == "__main__":
    main()
