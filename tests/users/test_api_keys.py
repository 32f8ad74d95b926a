import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from project.errors import InvalidInput
from tests.concurrency.support import WAITING_LOCKS_SQL
from tests.conftest import bearer
from tests.support import wait_for
from users.keys import hash_key
from users.models import ApiKey, User
from users.selectors import api_key_for_bearer
from users.services import TooManyKeys, api_key_create, api_key_revoke

PASSWORD = "correct horse battery staple"


def test_token_endpoint_returns_a_key_once_and_stores_only_its_hmac(api_client, customer):
    response = api_client.post(
        "/api/v1/auth/tokens", {"email": "Customer@Example.com", "password": PASSWORD, "name": "shop"}, format="json"
    )

    assert response.status_code == 201, response.content
    key = response.json()["key"]
    stored = ApiKey.objects.get(prefix=response.json()["prefix"])
    assert stored.hashed == hash_key(key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(k)::text FROM users_apikey k")
        rows = [row[0] for row in cursor.fetchall()]
    assert rows
    assert all(key not in row and key.split("_", 2)[2] not in row for row in rows)
    assert sorted(stored.scopes) == ["read", "write"]


def test_a_fresh_key_authenticates(api_client, customer):
    key = api_client.post("/api/v1/auth/tokens", {"email": customer.email, "password": PASSWORD}, format="json").json()[
        "key"
    ]

    response = bearer(APIClient(), key).get("/api/v1/auth/keys")

    assert response.status_code == 200
    assert [item["prefix"] for item in response.json()["results"]] == [key.split("_")[1]]
    assert "key" not in response.json()["results"][0]


def test_wrong_password_is_refused_with_the_envelope(api_client, customer):
    response = api_client.post("/api/v1/auth/tokens", {"email": customer.email, "password": "nope"}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-email", "password": "x"},
        {"email": "a@example.com", "password": "x", "scopes": ["root"]},
        {"email": "a@example.com", "password": "x", "expires_in_days": 0},
        {"email": "a@example.com" * 40, "password": "x"},
    ],
)
def test_bad_token_requests_are_400_with_field_errors(api_client, db, body):
    response = api_client.post("/api/v1/auth/tokens", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"]


def test_customer_cannot_take_the_staff_scope(api_client, customer):
    response = api_client.post(
        "/api/v1/auth/tokens", {"email": customer.email, "password": PASSWORD, "scopes": ["staff"]}, format="json"
    )

    assert response.status_code == 400
    assert "scopes" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sr_abcdefghij_not-the-secret",
        "Bearer garbage",
        "Bearer sr_abc_def",
        "Bearer",
        "Bearer a b",
    ],
)
def test_wrong_keys_are_401(db, customer, header):
    api_key_create(user=customer)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/auth/keys")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_refused(db, customer):
    api_key, key = api_key_create(user=customer)
    forged = f"sr_{api_key.prefix}_{'x' * 43}"

    assert bearer(APIClient(), key).get("/api/v1/auth/keys").status_code == 200
    assert bearer(APIClient(), forged).get("/api/v1/auth/keys").status_code == 401


def test_expired_key_is_refused(db, customer):
    api_key, key = api_key_create(user=customer)
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert bearer(APIClient(), key).get("/api/v1/auth/keys").status_code == 401


def test_revoked_key_is_refused_and_revoking_is_scoped_to_the_owner(db, customer, staff_user):
    own, own_key = api_key_create(user=customer)
    other, other_key = api_key_create(user=staff_user)
    client = bearer(APIClient(), own_key)

    assert client.delete(f"/api/v1/auth/keys/{other.prefix}").status_code == 404
    assert bearer(APIClient(), other_key).get("/api/v1/auth/keys").status_code == 200

    assert client.delete(f"/api/v1/auth/keys/{own.prefix}").status_code == 204
    assert client.get("/api/v1/auth/keys").status_code == 401


def test_inactive_users_key_is_refused(db, customer):
    _, key = api_key_create(user=customer)
    customer.is_active = False
    customer.save()

    assert bearer(APIClient(), key).get("/api/v1/auth/keys").status_code == 401


def test_last_used_is_written_at_most_once_a_minute(db, customer, django_assert_num_queries):
    api_key, key = api_key_create(user=customer)
    client = bearer(APIClient(), key)

    client.get("/api/v1/auth/keys")
    first = ApiKey.objects.get(pk=api_key.pk).last_used_at
    client.get("/api/v1/auth/keys")
    second = ApiKey.objects.get(pk=api_key.pk).last_used_at
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    client.get("/api/v1/auth/keys")
    third = ApiKey.objects.get(pk=api_key.pk).last_used_at

    assert first is not None
    assert second == first
    assert third > first


def test_the_bearer_lookup_loads_the_key_and_its_user_as_the_orm_would_in_one_statement(
    db, customer, django_assert_num_queries
):
    api_key, key = api_key_create(user=customer, scopes=["read", "write"])

    with django_assert_num_queries(1):
        found = api_key_for_bearer(key=key)
        user = found.user
        stored = {field.attname: getattr(found, field.attname) for field in ApiKey._meta.concrete_fields}
        owner = {field.attname: getattr(user, field.attname) for field in User._meta.concrete_fields}

    orm = ApiKey.objects.select_related("user").get(pk=api_key.pk)
    assert stored == {field.attname: getattr(orm, field.attname) for field in ApiKey._meta.concrete_fields}
    assert owner == {field.attname: getattr(orm.user, field.attname) for field in User._meta.concrete_fields}
    assert found.get_deferred_fields() == set() and user.get_deferred_fields() == set()
    assert not found._state.adding and not user._state.adding
    assert found.scopes == ["read", "write"]


def test_the_bearer_lookup_is_prepared_on_its_connection_and_still_sees_a_revocation(db, customer):
    api_key, key = api_key_create(user=customer)
    for _ in range(6):  # prepared on its fifth run on this connection
        assert api_key_for_bearer(key=key) is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%FROM users_apikey k%"])
        assert cursor.fetchone() == (1,)

    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now())

    assert api_key_for_bearer(key=key) is None


# --- how many keys, for how long -------------------------------------------------------------------------------


def _ask_for_a_key(client: APIClient, **extra):
    return client.post(
        "/api/v1/auth/tokens", {"email": "customer@example.com", "password": PASSWORD, **extra}, format="json"
    )


def test_a_user_holds_at_most_the_configured_number_of_live_keys(api_client, customer, settings):
    settings.API_KEYS_MAX_PER_USER = 3
    revoked, _ = api_key_create(user=customer)
    api_key_revoke(user=customer, prefix=revoked.prefix)
    expired, _ = api_key_create(user=customer)
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    created = [_ask_for_a_key(api_client).status_code for _ in range(3)]
    refused = _ask_for_a_key(api_client)

    assert created == [201, 201, 201]  # revoked and expired keys are not live: they do not count
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "too_many_keys" and "3" in error["detail"]
    assert ApiKey.objects.filter(user=customer).count() == 5

    live = ApiKey.objects.filter(user=customer, revoked_at__isnull=True, expires_at__gt=timezone.now()).first()
    api_key_revoke(user=customer, prefix=live.prefix)
    assert _ask_for_a_key(api_client).status_code == 201  # revoking one makes room again


def test_the_cap_is_per_user(api_client, customer, staff_user, settings):
    settings.API_KEYS_MAX_PER_USER = 1
    api_key_create(user=staff_user)

    assert _ask_for_a_key(api_client).status_code == 201
    with pytest.raises(TooManyKeys):
        api_key_create(user=staff_user)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_key_requests_racing_at_the_cap_create_one(settings):
    settings.API_KEYS_MAX_PER_USER = 1
    user = User.objects.create_user(email="racer@example.com", password=PASSWORD)
    created, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first():
        # Creates the last allowed key and keeps its transaction open until the second request is seen
        # waiting (or has finished without waiting, which is the bug).
        try:
            with transaction.atomic():
                results["first"] = api_key_create(user=user)
                created.set()
                release.wait(timeout=30)
        except Exception as exc:  # the test inspects every outcome
            results["first"] = exc
        finally:
            created.set()
            connection.close()

    def second():
        try:
            results["second"] = api_key_create(user=user)
        except Exception as exc:
            results["second"] = exc
        finally:
            connection.close()

    def second_waits_or_is_done() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(WAITING_LOCKS_SQL)
            return cursor.fetchone()[0] > 0 or not racer.is_alive()

    holder, racer = threading.Thread(target=first), threading.Thread(target=second)
    holder.start()
    assert created.wait(timeout=30)
    racer.start()
    wait_for(second_waits_or_is_done, timeout=30, interval=0.01, what="the second request to wait or finish")
    release.set()
    holder.join(timeout=30)
    racer.join(timeout=30)

    assert isinstance(results["first"], tuple), results["first"]
    assert isinstance(results["second"], TooManyKeys), results["second"]
    assert ApiKey.objects.filter(user=user).count() == 1


def test_a_key_lives_at_most_api_key_max_days(api_client, customer, settings):
    settings.API_KEY_MAX_DAYS = 30
    settings.API_KEY_DEFAULT_DAYS = 365

    too_long = _ask_for_a_key(api_client, expires_in_days=31)
    longest = _ask_for_a_key(api_client, expires_in_days=30)
    default, _ = api_key_create(user=customer)

    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "invalid" and "expires_in_days" in too_long.json()["error"]["fields"]
    assert longest.status_code == 201
    assert default.expires_at <= timezone.now() + timedelta(days=30)  # the default is capped too
    with pytest.raises(InvalidInput):
        api_key_create(user=customer, expires_in_days=31)


def test_the_default_limit_on_a_keys_life_is_a_year(api_client, customer):
    assert _ask_for_a_key(api_client, expires_in_days=366).status_code == 400
    assert _ask_for_a_key(api_client, expires_in_days=365).status_code == 201
