"""Fixtures every test package shares."""

import pytest


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """The test database, and before it is dropped, the presence lock a consumer test's
    process took on PostgreSQL (its connection would keep the DROP waiting)."""
    yield
    from matching.processes import process_presence_release

    process_presence_release()
