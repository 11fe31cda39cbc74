"""The rematch look-up (PROTOCOL.md §7.2) against the number of dialogs that ended within the
window: every /start of a connection whose last dialog ended less than
RANDOMCHAT_REMATCH_WINDOW ago runs it.

    .venv/bin/python bench/rematch.py                                   # 20,000 ended dialogs
    .venv/bin/python bench/rematch.py --ended 2000 --before /tmp/main-tree

A fresh PostgreSQL database holds 1,000 users (a connection each) and `--ended` dialogs
between them, all ended now, then ANALYZEd. For each work tree, a process runs that tree's
look-up (dialogs.pairing._recent_partners_sql) for one connection on one Django connection,
as a server does: prepared after its fifth run, then with PostgreSQL's generic plan
(plan_cache_mode), timed over `--runs` runs after 20 of warm-up; median and p90.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

USERS = 1000


def measure(tree: str, runs: int) -> None:
    """In a process of its own: time `tree`'s look-up on the database of DATABASE_URL."""
    sys.path.insert(0, tree)
    os.environ["DJANGO_SETTINGS_MODULE"] = "randomchat.settings"
    import django

    django.setup()
    from django.db import connection

    from dialogs.pairing import _recent_partners_sql

    sql, params = _recent_partners_sql(["user.5"])
    times = []
    with connection.cursor() as cursor:
        for _ in range(runs + 20):
            start = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchall()
            times.append(time.perf_counter() - start)
    times = times[20:]
    print(json.dumps({"median": statistics.median(times), "p90": h.percentile(times, 90)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ended", type=int, default=20000, help="dialogs ended within the window")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--before", metavar="TREE", help="also this work tree (e.g. a worktree of main; same schema)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role == "measure":
        measure(rest[0], args.runs)
        return
    h.header("the rematch look-up against the dialogs ended within the window")
    database = h.postgres_database("bench_rematch")
    populate = (
        f"INSERT INTO matching_pooluser (id, name, language, channel_name, status, created_at, resume_grace,"
        f" detached_seq) SELECT gen_random_uuid(), 'u', 'en', 'user.' || g, 'left', now(), 0, 0"
        f" FROM generate_series(1, {USERS}) AS g;"
        " WITH u AS (SELECT id, row_number() OVER () AS n FROM matching_pooluser)"
        " INSERT INTO dialogs_dialog (id, first_id, second_id, language, status, started_at, ended_at, end_reason,"
        " last_seq) SELECT gen_random_uuid(), a.id, b.id, 'en', 'ended', now(), now(), 'stop', 0"
        f" FROM generate_series(0, {args.ended - 1}) AS g"
        f" JOIN u AS a ON a.n = 1 + g % {USERS} JOIN u AS b ON b.n = 1 + (g + 1 + g / {USERS}) % {USERS};"
        " ANALYZE;"
    )
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", database["DATABASE_URL"], "-c", populate], check=True)
    env = h.server_env(database)
    print(f"# {USERS} users, {args.ended} dialogs ended within the window, {args.runs} runs per tree", flush=True)
    results = {}
    for label, tree in [("this tree", str(h.REPO))] + ([("before", args.before)] if args.before else []):
        out = subprocess.run([h.PYTHON, __file__, "--role", "measure", "--runs", str(args.runs), tree], env=env,
                             cwd=tree, check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
        print(f"{label:<10} median {results[label]['median'] * 1e3:.3f} ms  p90 {results[label]['p90'] * 1e3:.3f} ms")
    if "before" in results:
        print(f"this tree / before: {results['this tree']['median'] / results['before']['median']:.2f}x (median)")


if __name__ == "__main__":
    main()
