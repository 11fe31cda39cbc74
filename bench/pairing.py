"""Pairing latency with an empty pool and with 1,000 and 10,000 waiting users who match nobody.

    .venv/bin/python bench/pairing.py            # 600 pairs per pool size, SQLite and PostgreSQL
    .venv/bin/python bench/pairing.py --quick    # 100 pairs per pool size, a smoke test
    .venv/bin/python bench/pairing.py --backend postgres --pairs 1000

What is timed: user A has sent /start and got its RECEIPT (it waits in the pool); the clock
starts just before user B's /start frame is written and stops when the later of the two
event-10 frames (A's and B's) has been read. Then A sends /stop, both get 30, and the same two
connections start the next pair, so the pool keeps exactly its filler users.

One daphne per pool size (0, 1,000, 10,000), each with its own fresh database, all running
at once; the pairs go to them in interleaved blocks (the order shuffled per round), so slow
drift on the machine hits every size alike. SQLite runs on the in-memory channel layer (the
embedded default); PostgreSQL on Redis (RedisChannelLayer), as deployed: a private
PostgreSQL cluster and redis-server that the harness starts (see bench/harness.py).

The filler users are bulk-inserted with the ORM (status waiting, process null, channel names
nobody listens on, created_at 1 min to 1 h ago, so they are all older than the measured pair):

- 50% speak the measured pair's language ("en") but match neither measured user, in four
  equal kinds: (a) male, target gender "other"; (b) female aged 45-80, no target (the measured
  users want 20-40); (c) no gender and no age, no target (a null attribute meets no target);
  (d) gender "other" aged 20-40, target age >= 50.
- 50% speak one of 9 other languages (de fr es ru pt it ja tr pl), random gender and age,
  mostly no target: they would match the measured users but for the language.

Measured pair: A is male, 30, wants a female aged 20-40; B is female, 25, wants a male aged
20-40. Rate limits are raised for the server (RANDOMCHAT_RATE_*), since each connection
sends /start many times per second.

A fourth server, "10000+index", has the same 10,000 fillers plus the index that
bench/README.md proposes (pool_waiting_gender_idx: language, gender, created_at, partial on
status = 'waiting'), created by this script in its database only: the proposal measured side
by side with what it would change.

Afterwards the pairing query itself (matching.selectors.pool_candidates_for(B)[:5], with
select_for_update(skip_locked=True) as _claim_next runs it) is timed in-process against each
database (so it finds nothing, having no A to find: a full scan of what the index offers) and
EXPLAINed on the largest pool with and without the index.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

LANG = "en"
OTHER_LANGS = ["de", "fr", "es", "ru", "pt", "it", "ja", "tr", "pl"]
BODY_A = {"name": "A", "languageCode": LANG, "userAttributes": {"gender": "male", "age": 30},
          "targetAttributes": {"gender": "female", "age": {"min": 20, "max": 40}}}
BODY_B = {"name": "B", "languageCode": LANG, "userAttributes": {"gender": "female", "age": 25},
          "targetAttributes": {"gender": "male", "age": {"min": 20, "max": 40}}}


# In a helper process, with Django pointed at one benchmark database.


def filler_users(count: int, seed: int = 1):
    from datetime import timedelta

    from django.utils import timezone

    from matching.models import PoolUser

    rng = random.Random(seed)
    now = timezone.now()
    users = []
    for i in range(count):
        created = now - timedelta(seconds=rng.uniform(60, 3600))
        common = dict(channel_name=f"bench.filler.{i}", status="waiting", process=None, created_at=created, name=f"filler{i}")
        if i % 2 == 0:
            kind = (i // 2) % 4
            if kind == 0:
                user = PoolUser(language=LANG, gender="male", age=rng.randint(18, 60), target_gender="other", **common)
            elif kind == 1:
                user = PoolUser(language=LANG, gender="female", age=rng.randint(45, 80), **common)
            elif kind == 2:
                user = PoolUser(language=LANG, gender=None, age=None, **common)
            else:
                user = PoolUser(language=LANG, gender="other", age=rng.randint(20, 40), target_age_min=rng.randint(50, 70), **common)
        else:
            user = PoolUser(
                language=rng.choice(OTHER_LANGS), gender=rng.choice(["male", "female", "other", None]),
                age=rng.choice([None, rng.randint(16, 70)]),
                target_gender=rng.choice([None, None, None, "male", "female"]), **common,
            )
        users.append(user)
    return users


# The index bench/README.md proposes (created only in the "+index" database).
PROPOSED_INDEX = ("CREATE INDEX pool_waiting_gender_idx ON matching_pooluser (language, gender, created_at) "
                  "WHERE status = 'waiting'")


def role_fill(count: int, index: bool) -> None:
    from django.db import connection

    from matching.models import PoolUser

    PoolUser.objects.bulk_create(filler_users(count), batch_size=1000)
    with connection.cursor() as cursor:
        if index:
            cursor.execute(PROPOSED_INDEX)
        cursor.execute("ANALYZE")
    print(json.dumps({"waiting": PoolUser.objects.filter(status="waiting").count()}))


def _b_user():
    from matching.models import PoolUser

    return PoolUser(language=LANG, gender="female", age=25, target_gender="male", target_age_min=20, target_age_max=40,
                    channel_name="bench.probe", status="pairing")


def role_query(repeats: int, explain: bool) -> None:
    """Time (and EXPLAIN) the pairing query of a newcomer like B, against the filled pool."""
    from django.db import connection, transaction

    from matching.selectors import pool_candidates_for

    user = _b_user()
    times = []
    for _ in range(repeats):
        with transaction.atomic():
            t0 = time.perf_counter()
            rows = list(pool_candidates_for(user).select_for_update(skip_locked=True)[:5])
            times.append(time.perf_counter() - t0)
    out = {"median_s": h.median(times), "p99_s": h.percentile(times, 99), "rows": len(rows)}
    if explain:
        qs = pool_candidates_for(user)[:5]
        out["sql"] = str(qs.query)
        with transaction.atomic():
            if connection.vendor == "postgresql":
                out["plan"] = qs.select_for_update(skip_locked=True).explain(analyze=True, buffers=True)
            else:
                out["plan"] = qs.explain()
    print(json.dumps(out))


def helper(role: str, database_env: dict, *args: str) -> dict:
    env = h.server_env(database_env)
    done = subprocess.run([h.PYTHON, __file__, "--role", role, *args], cwd=h.REPO, env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# The client side, in this process.


class Pairer:
    """Two connections to one server that pair with each other again and again."""

    def __init__(self, server: h.Daphne, label: str):
        self.server = server
        self.label = label
        self.waiters: dict[tuple[int, int], asyncio.Future] = {}
        self.refusals: list = []

    def on_message(self, client, body: bytes, t: float) -> None:
        event = json.loads(body)
        code = event["eventCode"]
        if code == 10:
            client.chat, client.user = event["chatUUID"], event["senderUUID"]
        elif code in (11, 21, 31):
            self.refusals.append(event)
        fut = self.waiters.get((id(client), code))
        if fut is not None and not fut.done():
            fut.set_result(t)

    def expect(self, client, code: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.waiters[(id(client), code)] = fut
        return fut

    async def open(self) -> None:
        self.a = await h.StompClient(self.server.url, self.on_message).open()
        self.b = await h.StompClient(self.server.url, self.on_message).open()
        self.n = 0

    async def pair(self) -> float:
        a, b = self.a, self.b
        self.n += 1
        fut = await a.send("/start", BODY_A, receipt=f"s{self.n}")
        await asyncio.wait_for(fut, 30)
        got_a, got_b = self.expect(a, 10), self.expect(b, 10)
        t0 = time.perf_counter()
        await b.send("/start", BODY_B)
        done, _ = await asyncio.wait([got_a, got_b], timeout=30)
        if len(done) < 2:
            raise RuntimeError(f"{self.label}: pair {self.n} not made in 30 s (A got 10: {got_a.done()}, "
                               f"B got 10: {got_b.done()}); server log: {self.server.log_path}")
        t_a, t_b = got_a.result(), got_b.result()
        latency = max(t_a, t_b) - t0
        left_a, left_b = self.expect(a, 30), self.expect(b, 30)
        await a.send("/stop", {"chatUUID": a.chat, "senderUUID": a.user, "content": None})
        await asyncio.wait_for(asyncio.gather(left_a, left_b), 30)
        if self.refusals:
            raise RuntimeError(f"{self.label}: refused: {self.refusals[:3]}")
        return latency

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


async def measure(servers: dict[int, h.Daphne], pairs: int, block: int, warmup: int, seed: int) -> dict[int, list[float]]:
    pairers = {size: Pairer(server, f"pool={size}") for size, server in servers.items()}
    for p in pairers.values():
        await p.open()
        for _ in range(warmup):
            await p.pair()
    samples: dict[int, list[float]] = {size: [] for size in servers}
    rng = random.Random(seed)
    order = list(servers)
    while min(len(v) for v in samples.values()) < pairs:
        rng.shuffle(order)
        for size in order:
            for _ in range(min(block, pairs - len(samples[size]))):
                samples[size].append(await pairers[size].pair())
    for p in pairers.values():
        await p.close()
    return samples


def run_backend(backend: str, sizes: list[int], args) -> dict:
    print(f"\n## {backend}: {'SQLite file, in-memory channel layer' if backend == 'sqlite' else 'PostgreSQL, RedisChannelLayer'}")
    dbs, servers = {}, {}
    try:
        for size in sizes:
            count, index = int(str(size).split("+")[0]), str(size).endswith("+index")
            slug = str(size).replace("+", "_")
            db = h.sqlite_database(f"pairing-{slug}") if backend == "sqlite" else h.postgres_database(f"bench_randomchat_pairing_{slug}")
            filled = helper("fill", db, str(count), "1" if index else "0")
            dbs[size] = db
            print(f"pool={size}: {filled['waiting']} waiting filler users inserted" + (", and the proposed index" if index else ""))
            extra = dict(h.RAISED_RATE_LIMITS)
            if backend == "postgres":
                extra["REDIS_URL"] = h.redis_url()
            servers[size] = h.Daphne(h.server_env(db, extra), name=f"pairing-{backend}-{size}").start()
        t0 = time.monotonic()
        samples = asyncio.run(measure(servers, args.pairs, args.block, args.warmup, args.seed))
        elapsed = time.monotonic() - t0
        for size, server in servers.items():
            errors = server.log_errors()
            if errors:
                print(f"pool={size}: server log has {len(errors)} error lines, e.g. {errors[0]}")
    finally:
        for server in servers.values():
            server.stop()
    base = samples[sizes[0]]
    result = {"sizes": {}}
    print(f"{sum(len(v) for v in samples.values())} pairs in {elapsed:.0f}s; load average now {h.load_average()}")
    print(f"{'pool':>11} {'pairs':>6} {'p50':>10} {'p90':>10} {'p99':>10} {'p99/p99(0)':>11} {'p50/p50(0)':>11}")
    for size in sizes:
        v = samples[size]
        p50, p90, p99 = h.percentile(v, 50), h.percentile(v, 90), h.percentile(v, 99)
        r99 = p99 / h.percentile(base, 99)
        r50 = p50 / h.percentile(base, 50)
        result["sizes"][size] = {"pairs": len(v), "p50_ms": p50 * 1e3, "p90_ms": p90 * 1e3, "p99_ms": p99 * 1e3, "p99_ratio": r99, "p50_ratio": r50}
        print(f"{size!s:>11} {len(v):>6} {p50 * 1e3:>7.2f} ms {p90 * 1e3:>7.2f} ms {p99 * 1e3:>7.2f} ms {r99:>10.2f}x {r50:>10.2f}x")
    largest = max((s for s in sizes if isinstance(s, int)), default=sizes[-1])
    goal = result["sizes"][largest]["p99_ratio"]
    print(f"goal: p99 at {largest} <= 1.5x p99 at {sizes[0]}: {goal:.2f}x -> {'MET' if goal <= 1.5 else 'MISSED'}")
    for size in sizes:
        if not isinstance(size, int):
            r = result["sizes"][size]["p99_ratio"]
            print(f"  with the proposed index ({size}): {r:.2f}x -> {'MET' if r <= 1.5 else 'MISSED'}")

    print("pairing query alone (pool_candidates_for(B).select_for_update(skip_locked)[:5], in-process, 200 runs):")
    for size in sizes:
        q = helper("query", dbs[size], "200", "1" if size == largest or not isinstance(size, int) else "0")
        print(f"  pool={size}: median {q['median_s'] * 1e3:.3f} ms, p99 {q['p99_s'] * 1e3:.3f} ms, rows {q['rows']}")
        if "plan" in q:
            result["plan"] = q["plan"]
            print(f"  SQL: {q['sql']}")
            print("  plan at pool=%s:\n    %s" % (size, q["plan"].replace("\n", "\n    ")))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 pairs per pool size")
    parser.add_argument("--pairs", type=int, help="measured pairs per pool size (default 600)")
    parser.add_argument("--block", type=int, default=25, help="pairs per block in the interleaving")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured pairs per server first")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--sizes", default="0,1000,10000,10000+index",
                        help="pool sizes; N+index also creates the proposed index")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "randomchat.settings")
        django.setup()
        if args.role == "fill":
            role_fill(int(rest[0]), rest[1] == "1")
        elif args.role == "query":
            role_query(int(rest[0]), rest[1] == "1")
        return
    if args.pairs is None:
        args.pairs = 100 if args.quick else 600
    if args.quick:
        args.warmup = 5
    sizes = [int(s) if s.isdigit() else s for s in args.sizes.split(",")]
    h.raise_nofile()
    h.header("pairing latency vs. pool size")
    print(f"# {args.pairs} pairs per pool size, blocks of {args.block}, {args.warmup} warm-up pairs per server; "
          f"server rate limits raised: {h.RAISED_RATE_LIMITS}")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        run_backend(backend, sizes, args)


if __name__ == "__main__":
    main()
