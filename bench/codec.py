"""Codec throughput: our STOMP parser and encoder next to stomp.py's, in one process.

    .venv/bin/python bench/codec.py            # 7 repetitions, about a minute
    .venv/bin/python bench/codec.py --quick    # 3 short repetitions, a smoke test

Each figure is the median of the repetitions, in frames per second. Our parser is
timed through `FrameParser.feed()` with one whole frame per call, so it also finds the
frame's end (NUL or content-length); stomp.py's `parse_frame()` gets a frame whose NUL
its transport has already cut off, so the comparison is, if anything, in its favour.
stomp.py serializes with `pack(convert_frame(frame))`, as its transport does; it does
not escape headers, ours does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stomp import utils as spy  # noqa: E402

from randomchat.stomp import Frame, FrameParser, encode_frame  # noqa: E402

SEND_BODY = json.dumps(
    {
        "chatUUID": "8f14e45f-ceea-467f-a0e6-1f2c7b3b9a10",
        "senderUUID": "c9f0f895-fb98-4b91-9d6e-0a7f7d3f2e11",
        "content": "Hi! Where are you from?",
    }
).encode()
MESSAGE_BODY = json.dumps(
    {
        "chatUUID": "8f14e45f-ceea-467f-a0e6-1f2c7b3b9a10",
        "senderUUID": "c9f0f895-fb98-4b91-9d6e-0a7f7d3f2e11",
        "eventCode": 20,
        "serviceContent": None,
        "content": "x" * 3800,
    }
).encode()


def workloads() -> list[tuple[str, Frame]]:
    send = Frame(
        "SEND",
        (("destination", "/message"), ("content-type", "application/json")),
        SEND_BODY,
    )
    message = Frame(
        "MESSAGE",
        (
            ("destination", "/user/dialog"),
            ("subscription", "sub-0"),
            ("message-id", "5d41402abc4b2a76b9719d911017c592-17"),
            ("content-type", "application/json"),
        ),
        MESSAGE_BODY,
    )
    return [("SEND ~200 B", send), ("MESSAGE 4 KiB", message)]


def spy_frame(frame: Frame) -> spy.Frame:
    headers = dict(frame.headers)
    headers["content-length"] = len(frame.body)
    return spy.Frame(frame.command, headers, frame.body)


def rate(fn, arg, n: int) -> float:
    # CPU time of this process: other work on the machine inflates wall time only.
    start = time.process_time()
    for _ in range(n):
        fn(arg)
    return n / (time.process_time() - start)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="3 short repetitions")
    cli.add_argument("--repeat", type=int, default=None)
    args = cli.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    seconds = 0.1 if args.quick else 0.5

    rows = []
    for name, frame in workloads():
        wire = encode_frame(frame)
        parser = FrameParser()
        expected = Frame(
            frame.command,
            frame.headers + (("content-length", str(len(frame.body))),),
            frame.body,
        )
        assert parser.feed(wire) == [expected], "our parser must round-trip the workload"
        parsed = spy.parse_frame(wire[:-1])
        assert parsed.cmd == frame.command and parsed.body == frame.body
        sframe = spy_frame(frame)
        assert len(spy.pack(spy.convert_frame(sframe))) > len(frame.body)

        cases = {
            "parse": (
                (parser.feed, wire),
                (spy.parse_frame, wire[:-1]),
            ),
            "serialize": (
                (encode_frame, frame),
                (lambda f: spy.pack(spy.convert_frame(f)), sframe),
            ),
        }
        for op, ((ours_fn, ours_arg), (spy_fn, spy_arg)) in cases.items():
            # Size one repetition to take about `seconds` for our side.
            n = max(1000, int(rate(ours_fn, ours_arg, 2000) * seconds))
            ours, theirs = [], []
            for _ in range(repeat):
                # Interleave so that both sides see the same machine state.
                ours.append(rate(ours_fn, ours_arg, n))
                theirs.append(rate(spy_fn, spy_arg, n))
            rows.append(
                (name, len(wire), op, statistics.median(ours), statistics.median(theirs))
            )

    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores; {repeat} repetitions, medians in frames/s"
    )
    header = (
        f"{'workload':<14} {'bytes':>6} {'op':<10} "
        f"{'ours':>12} {'stomp.py':>12} {'ours/stomp.py':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, size, op, ours, theirs in rows:
        print(
            f"{name:<14} {size:>6} {op:<10} "
            f"{ours:>12,.0f} {theirs:>12,.0f} {ours / theirs:>13.2f}x"
        )


if __name__ == "__main__":
    main()
