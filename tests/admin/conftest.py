import pytest


@pytest.fixture
def admin_client(client, django_user_model):
    """pytest-django's admin_client, without hashing a password (that costs a second per test)."""
    admin = django_user_model.objects.create_superuser("admin", email="admin@example.com", password=None)
    client.force_login(admin)
    return client
