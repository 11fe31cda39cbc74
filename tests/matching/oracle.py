"""The tests' oracle of the pairing rule (PROTOCOL.md §5), in plain Python: production pairs
with the query of matching/selectors.py, which the tests check against this."""

from __future__ import annotations

from chat.requests import Attributes, StartRequest, Target


def target_accepts(target: Target, attributes: Attributes) -> bool:
    """Each non-null target field must be met; a null attribute meets none."""
    if target.gender is not None and attributes.gender != target.gender:
        return False
    if target.age_min is not None and (attributes.age is None or attributes.age < target.age_min):
        return False
    if target.age_max is not None and (attributes.age is None or attributes.age > target.age_max):
        return False
    return True


def compatible(a: StartRequest, b: StartRequest) -> bool:
    return (
        a.language == b.language
        and target_accepts(a.target, b.attributes)
        and target_accepts(b.target, a.attributes)
    )
