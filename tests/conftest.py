import io
import json
import logging

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client
from pythonjsonlogger.json import JsonFormatter
from rest_framework.test import APIClient

from inventory import availability
from project.observability.logs import RequestIdFilter
from users.models import User
from users.services import api_key_create


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache, so no cached read leaks between tests. Only this run's
    keys (its prefix) go: parallel runs share the test Redis database."""
    cache.delete_pattern("*")
    availability.forget()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def customer(db) -> User:
    return User.objects.create_user(email="customer@example.com", password="correct horse battery staple")


@pytest.fixture
def staff_user(db) -> User:
    return User.objects.create_user(email="staff@example.com", password="correct horse battery staple", is_staff=True)


def bearer(client: APIClient, key: str) -> APIClient:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def admin_user(db) -> User:
    """A superuser (overrides pytest-django's, which does not know the email login)."""
    return User.objects.create_user(
        email="admin@example.com", password="correct horse battery staple", is_staff=True, is_superuser=True
    )


@pytest.fixture
def admin(admin_user) -> Client:
    """The Django test client, logged in as the superuser."""
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def customer_client(customer) -> APIClient:
    _, key = api_key_create(user=customer, scopes=["read", "write"])
    return bearer(APIClient(), key)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    _, key = api_key_create(user=staff_user, scopes=["read", "write", "staff"])
    return bearer(APIClient(), key)


@pytest.fixture
def json_log():
    """The production log format (JSON lines with the request id) captured from the root logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter_config = {k: v for k, v in django_settings.LOGGING["formatters"]["json"].items() if k != "()"}
    handler.setFormatter(JsonFormatter(**formatter_config))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
