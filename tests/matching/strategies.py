"""Hypothesis strategies for /start bodies, and the pairing rule written from PROTOCOL.md §5.

The reference works on the raw JSON objects a client sends, so it shares no code with
matching.rules: it reads the protocol's words, not the implementation.
"""

from __future__ import annotations

from hypothesis import strategies as st

MISSING = object()

# A few languages in both cases, so that language pairs are often equal.
languages = st.sampled_from(["en", "EN", "En", "en", "ru", "deu"])
genders = st.sampled_from([MISSING, None, "male", "female", "other"])
# Ages clustered around a few boundary values so that targets hit and miss.
# Few distinct values, so that a bound and an age are often equal, one apart or far apart.
ages = st.one_of(
    st.sampled_from([MISSING, None, 17, 18, 30, 31]), st.sampled_from([0, 150]), st.integers(0, 150)
)
bounds = st.one_of(st.sampled_from([MISSING, None, 18, 30]), st.sampled_from([18, 30, 0, 150]))


@st.composite
def target_ages(draw):
    kind = draw(st.sampled_from(["missing", "null", "int", "range"]))
    if kind == "missing":
        return MISSING
    if kind == "null":
        return None
    if kind == "int":
        return draw(st.sampled_from([18, 30]) | st.integers(0, 150))
    low, high = draw(bounds), draw(bounds)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        low, high = high, low
    return {k: v for k, v in (("min", low), ("max", high)) if v is not MISSING}


def _section(draw, gender, age):
    kind = draw(st.sampled_from(["missing", "null", "object", "object", "object"]))
    if kind == "missing":
        return MISSING
    if kind == "null":
        return None
    return {k: v for k, v in (("gender", draw(gender)), ("age", draw(age))) if v is not MISSING}


@st.composite
def start_bodies(draw):
    """A valid /start body as a client would send it (a dict to json.dumps)."""
    data = {"languageCode": draw(languages)}
    if draw(st.booleans()):
        data["name"] = draw(st.sampled_from(["Bob", " Alice ", "Анна"]))
    for key, age in (("userAttributes", ages), ("targetAttributes", target_ages())):
        section = _section(draw, genders, age)
        if section is not MISSING:
            data[key] = section
    return data


def _attributes(data: dict, key: str) -> dict:
    """Missing sections and missing keys inside them mean null."""
    return data.get(key) or {}


def reference_target_accepts(target: dict, user: dict) -> bool:
    """Each non-null target field must be satisfied; a null attribute satisfies none."""
    gender, age = user.get("gender"), user.get("age")
    wanted_gender = target.get("gender")
    if wanted_gender is not None and gender != wanted_gender:
        return False
    wanted_age = target.get("age")
    if wanted_age is None:
        return True
    if isinstance(wanted_age, int):  # exactly that age
        return age is not None and age == wanted_age
    low, high = wanted_age.get("min"), wanted_age.get("max")
    if low is None and high is None:
        # Settled here (§5 leaves it open): a range with no bound asks for nothing, like null.
        return True
    if age is None:
        return False
    return (low is None or low <= age) and (high is None or age <= high)


def reference_compatible(a: dict, b: dict) -> bool:
    """Same language (case-insensitive), and each one's target accepts the other."""
    return (
        a["languageCode"].lower() == b["languageCode"].lower()
        and reference_target_accepts(_attributes(a, "targetAttributes"), _attributes(b, "userAttributes"))
        and reference_target_accepts(_attributes(b, "targetAttributes"), _attributes(a, "userAttributes"))
    )
