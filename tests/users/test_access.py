"""Key scopes on the key routes, and the admin for staff only."""

from rest_framework.test import APIClient

from tests.conftest import bearer
from users.models import ApiKey
from users.services import api_key_create

PASSWORD = "correct horse battery staple"


def test_a_read_only_key_lists_keys_but_cannot_revoke_another(customer):
    _, read_key = api_key_create(user=customer, scopes=["read"])
    sibling, _ = api_key_create(user=customer, scopes=["read", "write"])
    client = bearer(APIClient(), read_key)

    listed = client.get("/api/v1/auth/keys")
    refused = client.delete(f"/api/v1/auth/keys/{sibling.prefix}")

    assert listed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    sibling.refresh_from_db()
    assert sibling.revoked_at is None


def test_any_key_may_revoke_itself(customer):
    reader, read_key = api_key_create(user=customer, scopes=["read"])

    response = bearer(APIClient(), read_key).delete(f"/api/v1/auth/keys/{reader.prefix}")

    assert response.status_code == 204
    reader.refresh_from_db()
    assert reader.revoked_at is not None


def test_a_write_key_revokes_its_siblings(customer):
    _, write_key = api_key_create(user=customer, scopes=["write"])
    sibling, _ = api_key_create(user=customer)

    response = bearer(APIClient(), write_key).delete(f"/api/v1/auth/keys/{sibling.prefix}")

    assert response.status_code == 204


def test_listing_keys_needs_the_read_scope(customer):
    _, write_only = api_key_create(user=customer, scopes=["write"])

    response = bearer(APIClient(), write_only).get("/api/v1/auth/keys")

    assert response.status_code == 403


def test_nobody_revokes_another_users_key(customer, staff_client, staff_user):
    theirs, _ = api_key_create(user=customer)

    response = staff_client.delete(f"/api/v1/auth/keys/{theirs.prefix}")

    assert response.status_code == 404
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None


def test_a_customer_cannot_log_in_to_the_admin(client, customer):
    response = client.post("/admin/login/", {"username": customer.email, "password": PASSWORD, "next": "/admin/"})

    assert response.status_code == 200  # the form again: staff accounts only
    assert b"staff account" in response.content
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302


def test_a_signed_in_customer_is_sent_to_the_admin_login(client, customer):
    client.force_login(customer)

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_reach_the_admin(client, staff_user):
    login = client.post("/admin/login/", {"username": staff_user.email, "password": PASSWORD, "next": "/admin/"})

    assert login.status_code == 302
    assert client.get("/admin/").status_code == 200
