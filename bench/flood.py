"""One client floods the server while 50 dialogs chat: how much do the dialogs suffer?

    .venv/bin/python bench/flood.py            # 6 s quiet phases, 3 s floods
    .venv/bin/python bench/flood.py --quick    # 3 s quiet phases, 2 s floods
    .venv/bin/python bench/flood.py --flood 10 --rounds 3  # longer floods (reconnects), 3 times

randomchat is served on its embedded default (a fresh SQLite file, in-memory channel layer)
with its DEFAULT rate limits: the flood must meet the protections a deployment has. A client
process runs 50 dialogs: every 2 s (each dialog at its own phase) A sends a message, B
answers as soon as it reads it, and the round trip (A's write to A's read of the answer) is
recorded with its time. That is 50 messages per second in all, well under what the server
handles (bench/dialogs.py) and under the per-connection limit of 10 per second.

The run is a sequence of phases: quiet, flood, quiet, flood, ..., quiet. In each flood phase
a separate flooder process (niced by 10, so that it takes the CPU the server and the dialogs
leave rather than theirs, as an attacker's own machine would) opens one connection and
writes frames, one per WebSocket message, as fast as it can for 3 s:

- eol: heart-beat EOLs;
- subunsub: SUBSCRIBE id:x destination:/user/dialog followed by UNSUBSCRIBE id:x;
- badsend: SEND /message with a body that is not JSON (each refused with an event 21).

Whenever the server closes the flooder's connection (its limits answer sustained abuse with
ERROR and close), the flooder reconnects (WebSocket + CONNECT + SUBSCRIBE) and goes on: a
reconnect flood too. A write that the server does not read waits for TCP; the flooder stops
writing when its 3 s are up, even in the middle of such a wait.

Then the flooder sends one more frame with a receipt and waits for it: the flood phase lasts
until the server has caught up with everything the flooder wrote ("caught up after"), or
until it closed the flooder's connection ("closed"), since the dialogs may suffer until
then. Round trips of the first second of a quiet phase are left out. The figure per flood
kind is its p99 round trip over the p99 of the quiet phases of the same run. The server's
RSS and CPU time are sampled throughout.
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
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from randomchat.stomp import Frame, encode_frame  # noqa: E402

KINDS = ["eol", "subunsub", "badsend"]
PROBE_TIMEOUT = 120
CODES = ["".join(c) for c in itertools.product(string.ascii_lowercase, repeat=3)]
TEXT = "How are you doing today? Tell me something about where you live."


# The dialogs (a client process)


async def run_dialogs(url: str, dialogs: int, interval: float) -> dict:
    """Chat until a line arrives on stdin; print "ready" once every dialog is paired."""
    waiters: dict[int, asyncio.Future] = {}
    refused = []

    def on_message(client, body, t):
        event = json.loads(body)
        code = event["eventCode"]
        if code == 10:
            client.chat, client.user = event["chatUUID"], event["senderUUID"]
            client.paired.set()
        elif code == 20 and event["senderUUID"] != client.user:
            if client.role == "b":
                return client.send("/message", {"chatUUID": client.chat, "senderUUID": client.user,
                                                "content": "re " + event["content"]})
            fut = waiters.pop(id(client), None)
            if fut is not None and not fut.done():
                fut.set_result(t)
        elif code in (11, 21, 31):
            refused.append(event)
        return None

    async def pair(i):
        a = await h.StompClient(url, on_message).open()
        b = await h.StompClient(url, on_message).open()
        for c, role in ((a, "a"), (b, "b")):
            c.paired, c.role = asyncio.Event(), role
        start = {"languageCode": CODES[i]}
        await asyncio.wait_for(await a.send("/start", start, receipt="s"), 60)
        await b.send("/start", start)
        await asyncio.wait_for(asyncio.gather(a.paired.wait(), b.paired.wait()), 60)
        return a, b

    pairs = await asyncio.gather(*(pair(i) for i in range(dialogs)))
    samples: list[tuple[float, float]] = []
    lost = []
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.readline)
    print("ready", flush=True)

    async def chat(i, a, b):
        await asyncio.sleep(random.random() * interval)
        seq = 0
        next_at = time.monotonic()
        while not stop.done():
            seq += 1
            fut = loop.create_future()
            waiters[id(a)] = fut
            t0 = time.perf_counter()
            await a.send("/message", {"chatUUID": a.chat, "senderUUID": a.user, "content": f"{seq} {TEXT}"})
            try:
                t1 = await asyncio.wait_for(fut, 10)
                samples.append((time.monotonic(), t1 - t0))
            except asyncio.TimeoutError:
                lost.append(time.monotonic())
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    await asyncio.gather(*(chat(i, a, b) for i, (a, b) in enumerate(pairs)))
    await stop
    for a, b in pairs:
        await a.close()
        await b.close()
    return {"samples": samples, "lost": lost, "refused": len(refused), "refused_sample": refused[:3]}


# The flooder (a client process of its own)


async def flood(url: str, kind: str, seconds: float) -> dict:
    from websockets.asyncio.client import connect

    start = time.monotonic()
    stop = start + seconds
    connect_frame = encode_frame(Frame("CONNECT", (("accept-version", "1.2"), ("host", "localhost"), ("heart-beat", "0,0"))))
    subscribe = encode_frame(Frame("SUBSCRIBE", (("id", "flood"), ("destination", "/user/dialog"))))
    if kind == "eol":
        batch = [b"\n"] * 100
    elif kind == "subunsub":
        batch = [encode_frame(Frame("SUBSCRIBE", (("id", "x"), ("destination", "/user/dialog")))),
                 encode_frame(Frame("UNSUBSCRIBE", (("id", "x"),)))] * 50
    else:
        batch = [encode_frame(Frame("SEND", (("destination", "/message"),), b"this is not json {"))] * 100
    sent = reconnects = received = 0
    ws = None

    async def write(ws, frames):
        nonlocal sent
        for frame in frames:
            await ws.send(frame)
            sent += 1

    probe = asyncio.get_running_loop().create_future()

    async def drain(ws):
        nonlocal received
        try:
            async for data in ws:
                received += 1
                if b"receipt-id:probe" in (data.encode() if isinstance(data, str) else data) and not probe.done():
                    probe.set_result(time.monotonic())
        except Exception:  # noqa: BLE001
            pass

    reader = None
    while time.monotonic() < stop:
        if ws is None:
            ws = await connect(url, subprotocols=["v12.stomp"], compression=None, max_size=None, ping_interval=None)
            await ws.send(connect_frame)
            await ws.send(subscribe)
            reader = asyncio.get_running_loop().create_task(drain(ws))
        try:
            # A paced server reads slowly and the writes wait: stop on time all the same.
            await asyncio.wait_for(write(ws, batch), max(0.001, stop - time.monotonic()))
        except asyncio.TimeoutError:
            break
        except Exception:  # noqa: BLE001 - closed by the server: come back
            reconnects += 1
            ws = None
            continue
        if reader.done():
            reconnects += 1
            await ws.close()
            ws = None
    # How long until the server gets to a frame sent now?
    backlog = None
    t0 = time.monotonic()
    try:
        if ws is None or reader.done():
            raise ConnectionError
        probe_frame = encode_frame(Frame("SUBSCRIBE", (("id", "probe"), ("destination", "/user/dialog"), ("receipt", "probe"))))
        sending = asyncio.get_running_loop().create_task(ws.send(probe_frame))
        # The receipt, or the server closing the connection (the reader ends), or neither in time.
        await asyncio.wait({probe, reader}, timeout=PROBE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        sending.cancel()
        if probe.done():
            backlog = probe.result() - t0
        elif reader.done():
            backlog = None
        else:
            backlog = float("inf")
    except Exception:  # noqa: BLE001 - a closed connection has no backlog on the server
        backlog = None
    if ws is not None:
        ws.transport.abort()  # not a close handshake behind megabytes the server reads slowly
    return {"kind": kind, "sent": sent, "per_s": sent / (stop - start), "reconnects": reconnects,
            "received": received, "backlog_s": backlog}


# The orchestrator


def sample_rss(pid: int, out: list, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.append((time.monotonic(), h.rss_kib(pid)))
        except (OSError, RuntimeError):
            return
        stop.wait(0.25)


def run_server(label: str, server: h.Daphne, kinds: list[str], args) -> dict:
    """quiet, flood, quiet, flood, ... quiet against one server; one dialog client process."""
    config = {"url": server.url, "dialogs": args.dialogs, "interval": args.interval}
    dialogs = subprocess.Popen([h.PYTHON, __file__, "--role", "dialogs", json.dumps(config)], cwd=h.REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if dialogs.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{label}: the dialog client did not start")
    rss: list = []
    stop_rss = threading.Event()
    threading.Thread(target=sample_rss, args=(server.pid, rss, stop_rss), daemon=True).start()
    phases, floods, cpu = [], [], []
    for kind in [k for kind in kinds * args.rounds for k in ("quiet", kind)] + ["quiet"]:
        t0, cpu0 = time.monotonic(), h.cpu_seconds(server.pid)
        if kind == "quiet":
            time.sleep(args.phase)
        else:
            # The flood phase lasts until the server has caught up with it (the probe's receipt).
            cfg = {"url": server.url, "kind": kind, "seconds": args.flood}
            out = subprocess.run([h.PYTHON, __file__, "--role", "flood", json.dumps(cfg)], cwd=h.REPO,
                                 capture_output=True, text=True, timeout=args.flood + PROBE_TIMEOUT + 120)
            if out.returncode != 0:
                raise RuntimeError(f"{label}: flooder failed: {out.stdout[-1000:]} {out.stderr[-2000:]}")
            floods.append(json.loads(out.stdout.strip().splitlines()[-1]))
        phases.append((kind, t0, time.monotonic()))
        cpu.append(h.cpu_seconds(server.pid) - cpu0)
        print(f"  {label}: {kind} phase {phases[-1][2] - t0:.1f} s", flush=True)
    dialogs.stdin.write("stop\n")
    dialogs.stdin.flush()
    out = dialogs.communicate(timeout=120)[0]
    stop_rss.set()
    if dialogs.returncode != 0:
        raise RuntimeError(f"{label}: dialog client failed: {out[-2000:]}")
    return {"result": json.loads(out.strip().splitlines()[-1]), "phases": phases, "floods": floods, "rss": rss,
            "cpu": cpu, "errors": server.log_errors()}


def report(label: str, run: dict, kinds: list[str]) -> list[tuple[str, float]]:
    result, phases, floods, rss = run["result"], run["phases"], run["floods"], run["rss"]
    by_kind: dict[str, list[float]] = {k: [] for k in ["quiet", *kinds]}
    for t, rtt in result["samples"]:
        for kind, t0, t1 in phases:
            # The first second of a quiet phase is left out: a flood's last frames settle.
            if (t0 + (1.0 if kind == "quiet" else 0.0)) <= t < t1:
                by_kind[kind].append(rtt)
    lost_by_kind = {k: 0 for k in by_kind}
    for t in result["lost"]:
        for kind, t0, t1 in phases:
            if t0 <= t < t1:
                lost_by_kind[kind] += 1
    base = h.percentile(by_kind["quiet"], 99)
    print(f"\n{label}:")
    print(f"{'phase':<10} {'seconds':>7} {'round trips':>11} {'p50':>9} {'p99':>9} {'max':>9} {'p99/quiet':>10} {'lost':>5}  flood")
    verdicts = []
    for kind, values in by_kind.items():
        seconds = sum(t1 - t0 for k, t0, t1 in phases if k == kind)
        cores = sum(c for (k, _, _), c in zip(phases, run["cpu"]) if k == kind) / seconds
        p50, p99 = h.percentile(values, 50), h.percentile(values, 99)
        rss_in = [kib for t, kib in rss for k, t0, t1 in phases if k == kind and t0 <= t < t1]
        detail = ""
        if kind != "quiet":
            fr = [r for r in floods if r["kind"] == kind]
            backlogs = ["closed" if r["backlog_s"] is None else f">{PROBE_TIMEOUT}s" if r["backlog_s"] == float("inf")
                        else f"{r['backlog_s']:.1f}s" for r in fr]
            detail = (f"{h.median([r['per_s'] for r in fr]):.0f} frames/s written, {sum(r['reconnects'] for r in fr)} reconnects, "
                      f"{sum(r['received'] for r in fr)} frames back, server caught up {', '.join(backlogs)} after it;")
            verdicts.append((kind, p99 / base))
        print(f"{kind:<10} {seconds:>7.1f} {len(values):>11} {p50 * 1e3:>6.1f} ms {p99 * 1e3:>6.1f} ms "
              f"{(max(values) if values else float('nan')) * 1e3:>6.0f} ms {p99 / base:>9.2f}x {lost_by_kind[kind]:>5}  "
              f"{detail} server CPU {cores:.2f} of a core, RSS max {max(rss_in) // 1024 if rss_in else 0} MiB")
    print(f"refused dialog messages: {result['refused']} {result['refused_sample']}; server log error lines: {len(run['errors'])}")
    worst = max(r for _, r in verdicts)
    print(f"goal: p99 round trip under a flood <= 2x without: worst {worst:.2f}x "
          f"({', '.join(f'{k} {r:.2f}x' for k, r in verdicts)}) -> {'MET' if worst <= 2 else 'MISSED'}")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s phases")
    parser.add_argument("--phase", type=float, help="seconds per quiet phase (default 6)")
    parser.add_argument("--flood", type=float, help="seconds of flooding per flood phase (default 3)")
    parser.add_argument("--dialogs", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a dialog's messages")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=1, help="run the sequence of floods this many times (pooled)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role == "dialogs":
        c = json.loads(rest[0])
        print(json.dumps(asyncio.run(run_dialogs(c["url"], c["dialogs"], c["interval"]))))
        return
    if args.role == "flood":
        os.nice(10)
        c = json.loads(rest[0])
        print(json.dumps(asyncio.run(flood(c["url"], c["kind"], c["seconds"]))))
        return
    args.phase = args.phase or (3.0 if args.quick else 6.0)
    args.flood = args.flood or (2.0 if args.quick else 3.0)
    kinds = args.kinds.split(",")
    h.raise_nofile()
    h.header("dialog round trips under a one-client flood")
    print(f"# {args.dialogs} dialogs, one message per {args.interval:g} s each; {args.phase:g} s quiet phases, {args.flood:g} s floods; "
          f"kinds {kinds} x {args.rounds} round(s); default rate limits; flooder niced by 10", flush=True)
    label = "randomchat (SQLite, in-memory layer)"
    server = h.Daphne(h.server_env(h.sqlite_database("flood")), name="flood")
    try:
        run = run_server(label, server.start(), kinds, args)
    finally:
        server.stop()
    print(f"load average now {h.load_average()}")
    report(label, run, kinds)


if __name__ == "__main__":
    main()
