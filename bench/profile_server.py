"""Profile a daphne under bench/dialogs.py's chat load with py-spy (a tool, not a benchmark).

    .venv/bin/python bench/profile_server.py sqlite            # randomchat on SQLite
    .venv/bin/python bench/profile_server.py postgres          # on PostgreSQL + Redis
    .venv/bin/python bench/profile_server.py sqlite --proposed # with bench/proposed_asgi.py
    .venv/bin/python bench/profile_server.py floor

Starts the server (fresh database, rate limits raised), one client process driving 50
ping-pong dialogs as bench/dialogs.py does, and after 4 s records the server for --seconds
with `py-spy record --threads --idle` (wall-clock samples of every thread, waiting included),
then prints the deliveries per second and the hottest frames: own time and cumulative, per
thread. py-spy is not a project dependency: `pip install --target /tmp/pyspy py-spy` and
pass --py-spy /tmp/pyspy/bin/py-spy, or have it on PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

# bench/dialogs.py by path: its module name is also the name of randomchat's Django app.
_spec = importlib.util.spec_from_file_location("bench_dialogs", os.path.join(os.path.dirname(os.path.abspath(__file__)), "dialogs.py"))
D = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(D)


def summarize(raw: str, top: int) -> None:
    own: dict[str, Counter] = {}
    cum: dict[str, Counter] = {}
    totals: Counter = Counter()
    with open(raw) as f:
        for line in f:
            stack, count = line.rstrip().rsplit(" ", 1)
            frames = stack.split(";")
            thread = frames[0].split(":", 1)[-1].strip() or frames[0]
            totals[thread] += int(count)
            own.setdefault(thread, Counter())[frames[-1]] += int(count)
            for frame in set(frames[1:]):
                cum.setdefault(thread, Counter())[frame] += int(count)
    for thread, n in totals.most_common():
        print(f"\n== thread {thread}: {n} samples")
        print("  own time:")
        for frame, c in own[thread].most_common(top // 2):
            print(f"    {c / n * 100:5.1f}%  {frame[:150]}")
        print("  cumulative:")
        for frame, c in cum[thread].most_common(top):
            print(f"    {c / n * 100:5.1f}%  {frame[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=["sqlite", "postgres", "floor"])
    parser.add_argument("--proposed", action="store_true")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy")
    parser.add_argument("--keep", help="also write py-spy's raw output here")
    args = parser.parse_args()
    h.header(f"py-spy profile of {args.server}{' + proposed_asgi' if args.proposed else ''} under 50 dialogs")
    if args.server == "floor":
        server = h.Daphne(h.server_env({}), app="floor:application", name="floor", pythonpath=[str(h.BENCH), str(h.REPO)]).start()
    elif args.server == "postgres":
        server = D.randomchat_server(h.postgres_database("bench_randomchat_profile"), "profile", proposed=args.proposed, redis=True)
    else:
        server = D.randomchat_server(h.sqlite_database("profile"), "profile", proposed=args.proposed)
    config = {"pairs": D.spread([server.url], 50), "codes": D.CODES[:50], "warmup": 2, "seconds": args.seconds + 2}
    client = subprocess.Popen([h.PYTHON, D.__file__, "--role", "client", json.dumps(config)], cwd=h.REPO,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(4)
    raw = args.keep or tempfile.mktemp(suffix=".pyspy")
    env = dict(os.environ)
    if args.py_spy.startswith("/tmp/pyspy/"):
        env["PYTHONPATH"] = "/tmp/pyspy"
    spy = subprocess.run([args.py_spy, "record", "--pid", str(server.pid), "--duration", str(int(args.seconds)),
                          "--format", "raw", "-o", raw, "--threads", "--idle", "--rate", "200"],
                         env=env, capture_output=True, text=True)
    out = client.communicate()[0]
    server.stop()
    if spy.returncode != 0:
        sys.exit(f"py-spy failed: {spy.stderr[-2000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    print(f"deliveries/s {r['deliveries'] / r['seconds']:.0f}, round trip p50 {h.percentile(r['rtts'], 50) * 1e3:.1f} ms; "
          f"load average {h.load_average()}")
    summarize(raw, args.top)
    if not args.keep:
        os.unlink(raw)


if __name__ == "__main__":
    main()
