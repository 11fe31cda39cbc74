"""matching.rules: /start parsing, field by field, and the pairing rule against PROTOCOL.md §5."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.requests import DEFAULT_NAME, Attributes, StartRequest, Target, parse_start
from tests.matching.oracle import compatible
from chat.refusals import Refusal

from .strategies import reference_compatible, start_bodies


def body(**fields) -> bytes:
    data = {"languageCode": "en"}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def refusal_of(raw: bytes) -> Refusal:
    with pytest.raises(Refusal) as caught:
        parse_start(raw)
    return caught.value


# parse_start: what is accepted


def test_parse_start__seed_example():
    raw = (
        b'{"name": "Bob", "languageCode": "ru",'
        b' "userAttributes": {"gender": "male", "age": null},'
        b' "targetAttributes": {"gender": "female", "age": null}}'
    )
    assert parse_start(raw) == StartRequest(
        name="Bob", language="ru", attributes=Attributes("male", None), target=Target("female", None, None)
    )


def test_parse_start__missing_sections_and_keys_mean_null():
    assert parse_start(b'{"languageCode": "en"}') == StartRequest(
        name=DEFAULT_NAME, language="en", attributes=Attributes(), target=Target()
    )
    assert parse_start(body(userAttributes={}, targetAttributes={})).attributes == Attributes()
    assert parse_start(body(userAttributes=None, targetAttributes=None)).target == Target()
    assert parse_start(body(userAttributes={"age": 30})).attributes == Attributes(None, 30)
    assert parse_start(body(targetAttributes={"gender": "other"})).target == Target("other", None, None)


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        (None, "Anonymous"),
        ("  Bob  ", "Bob"),
        ("\tBob\n", "Bob"),  # trimming removes surrounding whitespace, control or not
        ("x" * 64, "x" * 64),
        ("  " + "x" * 64 + "  ", "x" * 64),
        ("Анна Мария", "Анна Мария"),
        ("😀", "😀"),
    ],
)
def test_parse_start__name(name, stored):
    raw = body() if name is None else body(name=name)
    assert parse_start(raw).name == stored


@pytest.mark.parametrize("code", ["en", "EN", "Ru", "deu", "DEU"])
def test_parse_start__language_is_lowercased(code):
    assert parse_start(body(languageCode=code)).language == code.lower()


@pytest.mark.parametrize("gender", ["male", "female", "other", None])
def test_parse_start__genders(gender):
    request = parse_start(body(userAttributes={"gender": gender}, targetAttributes={"gender": gender}))
    assert request.attributes.gender == gender
    assert request.target.gender == gender


@pytest.mark.parametrize("age", [0, 1, 150])
def test_parse_start__age_bounds(age):
    assert parse_start(body(userAttributes={"age": age})).attributes.age == age


@pytest.mark.parametrize(
    ("target_age", "bounds"),
    [
        (None, (None, None)),
        (25, (25, 25)),
        (0, (0, 0)),
        ({"min": 18, "max": 30}, (18, 30)),
        ({"min": 18, "max": None}, (18, None)),
        ({"min": None, "max": 30}, (None, 30)),
        ({"min": 18}, (18, None)),
        ({"max": 30}, (None, 30)),
        ({}, (None, None)),
        ({"min": 40, "max": 40}, (40, 40)),
        ({"min": 0, "max": 150}, (0, 150)),
    ],
)
def test_parse_start__target_age(target_age, bounds):
    target = parse_start(body(targetAttributes={"age": target_age})).target
    assert (target.age_min, target.age_max) == bounds


# parse_start: every refusal names its field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        # name
        (body(name=""), "name"),
        (body(name="   "), "name"),
        (body(name="x" * 65), "name"),
        (body(name=" " + "x" * 65 + " "), "name"),
        (body(name="Bo\x00b"), "name"),
        (body(name="Bo\nb"), "name"),
        (body(name="Bo\x07b"), "name"),
        (body(name="Bo\x7fb"), "name"),
        (body(name="Bo\x85b"), "name"),
        (body(name=5), "name"),
        (body(name=["Bob"]), "name"),
        (body(name=True), "name"),
        # languageCode: required, 2-3 letters
        (body(languageCode=...), "languageCode"),
        (body(languageCode=None), "languageCode"),
        (body(languageCode=""), "languageCode"),
        (body(languageCode="e"), "languageCode"),
        (body(languageCode="engl"), "languageCode"),
        (body(languageCode="e1"), "languageCode"),
        (body(languageCode="en-US"), "languageCode"),
        (body(languageCode=" en"), "languageCode"),
        (body(languageCode="en\n"), "languageCode"),
        (body(languageCode="éé"), "languageCode"),
        (body(languageCode=12), "languageCode"),
        # sections
        (body(userAttributes="male"), "userAttributes"),
        (body(userAttributes=[]), "userAttributes"),
        (body(targetAttributes=5), "targetAttributes"),
        # gender
        (body(userAttributes={"gender": "Male"}), "userAttributes.gender"),
        (body(userAttributes={"gender": ""}), "userAttributes.gender"),
        (body(userAttributes={"gender": 1}), "userAttributes.gender"),
        (body(userAttributes={"gender": ["male"]}), "userAttributes.gender"),
        (body(targetAttributes={"gender": "any"}), "targetAttributes.gender"),
        # user age: an integer 0-150 or null; a bool is not an int
        (body(userAttributes={"age": -1}), "userAttributes.age"),
        (body(userAttributes={"age": 151}), "userAttributes.age"),
        (body(userAttributes={"age": 30.0}), "userAttributes.age"),
        (body(userAttributes={"age": "30"}), "userAttributes.age"),
        (body(userAttributes={"age": True}), "userAttributes.age"),
        (body(userAttributes={"age": False}), "userAttributes.age"),
        (body(userAttributes={"age": {"min": 1}}), "userAttributes.age"),
        # target age: null, an int, or {min, max} with int|null bounds, min <= max
        (body(targetAttributes={"age": -1}), "targetAttributes.age"),
        (body(targetAttributes={"age": 151}), "targetAttributes.age"),
        (body(targetAttributes={"age": True}), "targetAttributes.age"),
        (body(targetAttributes={"age": "18"}), "targetAttributes.age"),
        (body(targetAttributes={"age": [18, 30]}), "targetAttributes.age"),
        (body(targetAttributes={"age": 18.5}), "targetAttributes.age"),
        (body(targetAttributes={"age": {"min": -1}}), "targetAttributes.age.min"),
        (body(targetAttributes={"age": {"min": True, "max": 30}}), "targetAttributes.age.min"),
        (body(targetAttributes={"age": {"min": "18"}}), "targetAttributes.age.min"),
        (body(targetAttributes={"age": {"max": 151}}), "targetAttributes.age.max"),
        (body(targetAttributes={"age": {"max": False}}), "targetAttributes.age.max"),
        (body(targetAttributes={"age": {"min": 31, "max": 30}}), "targetAttributes.age"),
        (body(targetAttributes={"age": {"min": 150, "max": 0}}), "targetAttributes.age"),
    ],
)
def test_parse_start__invalid_field(raw, field):
    refusal = refusal_of(raw)
    assert refusal.slug == "invalid_field"
    assert refusal.field == field
    assert refusal.detail
    assert refusal.as_error() == {"error": "invalid_field", "detail": refusal.detail, "field": field}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"languageCode": "en"',
        b"[]",
        b'"en"',
        b"null",
        b"42",
        b"\xff\xfe{}",
        b'{"languageCode": "en"}garbage',
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the JSON decoder can recurse
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=lambda raw: repr(raw[:24]),
)
def test_parse_start__invalid_json(raw):
    refusal = refusal_of(raw)
    assert refusal.slug == "invalid_json"
    assert refusal.field is None
    assert set(refusal.as_error()) == {"error", "detail"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        # A lone surrogate is valid JSON text but no Unicode string: it can be neither stored
        # nor encoded in an event, so it is refused like any other bad character.
        (b'{"languageCode": "en", "name": "Bo\\ud800b"}', "name"),
        (b'{"languageCode": "en", "name": "\\udfff"}', "name"),
    ],
)
def test_parse_start__lone_surrogate_in_name(raw, field):
    refusal = refusal_of(raw)
    assert (refusal.slug, refusal.field) == ("invalid_field", field)


def test_parse_start__surrogate_pair_is_one_character():
    assert parse_start(b'{"languageCode": "en", "name": "\\ud83d\\ude00"}').name == "😀"


# The pairing rule


@settings(max_examples=400, deadline=None)
@given(a=start_bodies(), b=start_bodies())
def test_compatible__matches_protocol_reference(a, b):
    ra, rb = parse_start(json.dumps(a).encode()), parse_start(json.dumps(b).encode())
    expected = reference_compatible(a, b)
    assert compatible(ra, rb) is expected
    assert compatible(rb, ra) is expected  # the rule is symmetric


@settings(max_examples=100, deadline=None)
@given(a=start_bodies())
def test_compatible__with_itself_iff_own_target_accepts_own_attributes(a):
    # Not a pairing (nobody is paired with themselves), but the rule must still be the rule.
    r = parse_start(json.dumps(a).encode())
    assert compatible(r, r) is reference_compatible(a, a)


@pytest.mark.parametrize(
    ("a_user", "b_target", "ok"),
    [
        ({"gender": None}, {"gender": "male"}, False),  # a null attribute meets no target field
        ({"age": None}, {"age": 30}, False),
        ({"age": None}, {"age": {"min": 18}}, False),
        ({"age": None}, {"age": {"max": 99}}, False),
        ({"age": 30}, {"age": 30}, True),
        ({"age": 31}, {"age": 30}, False),
        ({"age": 18}, {"age": {"min": 18, "max": 30}}, True),  # inclusive
        ({"age": 30}, {"age": {"min": 18, "max": 30}}, True),
        ({"age": 17}, {"age": {"min": 18, "max": 30}}, False),
        ({"age": 31}, {"age": {"min": 18, "max": 30}}, False),
        ({"gender": "male", "age": 20}, {"gender": "female"}, False),
        ({"gender": "other"}, {"gender": "other"}, True),
        ({}, {}, True),
    ],
)
def test_compatible__examples(a_user, b_target, ok):
    a = {"languageCode": "en", "userAttributes": a_user}
    b = {"languageCode": "EN", "targetAttributes": b_target}
    assert reference_compatible(a, b) is ok
    assert compatible(parse_start(json.dumps(a).encode()), parse_start(json.dumps(b).encode())) is ok


def test_compatible__language_must_match():
    en, de = parse_start(b'{"languageCode": "en"}'), parse_start(b'{"languageCode": "de"}')
    assert not compatible(en, de)
    assert compatible(en, parse_start(b'{"languageCode": "EN"}'))


def test_strategies__produce_both_outcomes():
    from hypothesis import find

    find(st.tuples(start_bodies(), start_bodies()), lambda ab: reference_compatible(*ab))
    find(st.tuples(start_bodies(), start_bodies()), lambda ab: not reference_compatible(*ab))
