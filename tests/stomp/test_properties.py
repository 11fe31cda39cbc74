"""Properties of the codec, checked with Hypothesis. Pure: no Django, no database."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from randomchat.stomp import HEARTBEAT, Frame, FrameError, FrameParser, encode_frame
from randomchat.stomp.frames import UNESCAPED_COMMANDS

PROPERTY = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

commands = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,31}", fullmatch=True)
escaped_commands = commands.filter(lambda c: c not in UNESCAPED_COMMANDS)

# Arbitrary text (never lone surrogates: they have no UTF-8), with a bias towards the
# characters that escaping is about.
SPECIAL = ":\n\r\\"


def texts(exclude: str = "") -> st.SearchStrategy[str]:
    chars = st.one_of(
        st.sampled_from([c for c in SPECIAL if c not in exclude] or ["x"]),
        st.characters(blacklist_categories=("Cs",), blacklist_characters=exclude),
    )
    return st.text(chars, max_size=20)


def header_lists(key_exclude: str = "", value_exclude: str = ""):
    pairs = st.tuples(
        texts(key_exclude).filter(lambda k: k != "content-length"), texts(value_exclude)
    )
    return st.lists(pairs, max_size=8).map(tuple)


bodies = st.binary(max_size=200) | st.sampled_from([b"", b"\x00", b"a\x00\n\r\n\x00b"])


def parsed(frame: Frame) -> Frame:
    """What the parser returns for an encoded `frame`: content-length comes last."""
    length = ("content-length", str(len(frame.body)))
    return Frame(frame.command, frame.headers + (length,), frame.body)


@PROPERTY
@given(
    version=st.sampled_from(["1.1", "1.2"]),
    command=escaped_commands,
    data=st.data(),
    body=bodies,
)
def test_serialize_then_parse_round_trips(version, command, data, body):
    # STOMP 1.1 has no escape for CR.
    exclude = "\r" if version == "1.1" else ""
    headers = data.draw(header_lists(exclude, exclude))
    frame = Frame(command, headers, body)
    assert FrameParser(version=version).feed(encode_frame(frame, version)) == [parsed(frame)]


@PROPERTY
@given(
    version=st.sampled_from(["1.0", "1.1", "1.2"]),
    command=st.sampled_from(sorted(UNESCAPED_COMMANDS)) | commands,
    headers=header_lists(key_exclude=":\n\r", value_exclude="\n\r"),
    body=bodies,
)
def test_unescaped_frames_round_trip(version, command, headers, body):
    # In 1.0, and in CONNECT/STOMP/CONNECTED, headers are written as they are.
    if version != "1.0" and command not in UNESCAPED_COMMANDS:
        command = "CONNECTED"
    frame = Frame(command, headers, body)
    assert FrameParser(version=version).feed(encode_frame(frame, version)) == [parsed(frame)]


def frames_of(version: str) -> st.SearchStrategy[Frame]:
    exclude = "\r" if version == "1.1" else ""
    return st.builds(Frame, escaped_commands, header_lists(exclude, exclude), bodies)


HAND_WRITTEN = (
    # Without content-length, with CRLF line ends.
    b"SEND\r\ndestination:/message\r\n\r\n{}\x00",
    Frame("SEND", (("destination", "/message"),), b"{}"),
)


def streams(version: str) -> st.SearchStrategy[list[tuple[bytes, list]]]:
    """Encoded frames, heart-beats and stray NULs in any order, each with what it parses to."""
    item = st.one_of(
        frames_of(version).map(lambda f: (encode_frame(f, version), [parsed(f)])),
        st.sampled_from([(b"\n", [HEARTBEAT]), (b"\r\n", [HEARTBEAT]), (b"\x00", [])]),
        st.just((HAND_WRITTEN[0], [HAND_WRITTEN[1]])),
    )
    return st.lists(item, max_size=8)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@PROPERTY
@given(version=st.sampled_from(["1.1", "1.2"]), data=st.data())
def test_any_chunking_yields_the_same_items(version, data):
    pieces = data.draw(streams(version))
    stream = b"".join(raw for raw, _ in pieces)
    expected = [item for _, items in pieces for item in items]
    assert FrameParser(version=version).feed(stream) == expected
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=len(stream) + 1))
    parser = FrameParser(version=version)
    items = []
    for chunk in chunked(stream, cuts):
        items += parser.feed(chunk)
    assert items == expected
    assert parser.buffered == 0


TOKENS = [
    b"\n", b"\r", b"\r\n", b"\x00", b":", b"\\", b"\\c", b"\\r", b"\xff", b"\xc3",
    b"SEND", b"CONNECT", b"content-length:", b"content-length:3", b"content-length:-1",
    b"\n\n", b"\r\n\r\n", b"x" * 40,
]
noise = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from(TOKENS),
        frames_of("1.2").map(encode_frame),
        st.just(HAND_WRITTEN[0]),
    ),
    max_size=30,
).map(b"".join)


@st.composite
def mutated(draw) -> bytes:
    """A valid stream with a few bytes replaced, inserted or cut: near misses."""
    data = bytearray(b"".join(raw for raw, _ in draw(streams("1.2"))))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        token = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=2))
        how = draw(st.sampled_from(["replace", "insert", "cut"]))
        if how == "replace":
            data[pos : pos + len(token)] = token
        elif how == "insert":
            data[pos:pos] = token
        else:
            del data[pos : pos + len(token)]
    return bytes(data)


limits = st.fixed_dictionaries(
    {
        "max_frame_size": st.integers(min_value=1, max_value=1000),
        "max_headers": st.integers(min_value=0, max_value=10),
        "max_header_line": st.integers(min_value=0, max_value=100),
    }
)


def feed_until_error(parser: FrameParser, chunks: list[bytes]) -> tuple[list, bool]:
    """Feed chunk by chunk; stop at the first FrameError, the only exception allowed."""
    items = []
    for chunk in chunks:
        try:
            items += parser.feed(chunk)
        except FrameError:
            return items, True
        # Whatever it was fed, the parser holds less than one frame's worth.
        assert parser.buffered < max(parser.max_frame_size, 2)
    return items, False


@settings(PROPERTY, max_examples=300)
@given(
    version=st.sampled_from(["1.0", "1.1", "1.2"]),
    kwargs=st.none() | limits,
    data=st.data(),
)
def test_arbitrary_bytes_only_raise_frame_error(version, kwargs, data):
    stream = data.draw(st.one_of(mutated(), noise, st.binary(max_size=300)))
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=12))
    chunks = chunked(stream, cuts)
    items, failed = feed_until_error(FrameParser(version=version, **kwargs or {}), chunks)
    # Chunking never changes the outcome: same items, or an error either way.
    whole, whole_failed = feed_until_error(FrameParser(version=version, **kwargs or {}), [stream])
    event("FrameError" if whole_failed else "no error")
    event("some frame parsed" if any(i is not HEARTBEAT for i in whole) else "no frame parsed")
    assert failed == whole_failed
    if not failed:
        assert items == whole
