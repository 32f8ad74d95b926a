"""Account pages: sign up, log in and out, password change and reset, API keys; bad input and CSRF."""

import re

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.test import Client

from users.models import ApiKey, User
from users.services import api_key_create

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase 42"


def texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def signup(client, email="new@example.com", password=PASSWORD, **extra):
    return client.post("/accounts/signup/", {"email": email, "password1": password, "password2": password, **extra})


def test_signup_creates_the_account_and_signs_in(client):
    response = signup(client, email="New@Example.com", full_name="Ada")
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get()
    assert user.email == "new@example.com" and user.full_name == "Ada" and not user.is_staff
    assert user.check_password(PASSWORD)
    assert client.get("/accounts/").status_code == 200


def test_signup_follows_a_safe_next_only(client):
    assert signup(client, email="a@example.com", next="/checkout/")["Location"] == "/checkout/"
    assert signup(Client(), email="b@example.com", next="https://evil.example/")["Location"] == "/"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "customer@EXAMPLE.com"}, "email"),  # taken, whatever the case
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({"password1": "short", "password2": "short"}, "password2"),
        ({"password1": "12345678901", "password2": "12345678901"}, "password2"),
        ({"password2": "something else entirely"}, "password2"),
        ({"email": "a\x00b@example.com"}, "email"),
        ({"is_staff": "on", "email": "sneaky@example.com", "password2": "x"}, "password2"),
    ],
)
def test_bad_signups_are_form_errors(client, customer, data, field):
    form = {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD, **data}
    response = client.post("/accounts/signup/", form)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert User.objects.count() == 1


def test_a_forged_staff_field_on_signup_is_ignored(client):
    signup(client, email="sneaky@example.com", is_staff="on", is_superuser="on")
    user = User.objects.get(email="sneaky@example.com")
    assert not user.is_staff and not user.is_superuser


def test_login_with_any_case_and_logout(client, customer):
    response = client.post(
        "/accounts/login/", {"username": "  Customer@Example.COM ", "password": PASSWORD, "next": "/orders/"}
    )
    assert response.status_code == 302 and response["Location"] == "/orders/"
    assert client.get("/orders/").status_code == 200
    out = client.post("/accounts/logout/")
    assert out.status_code == 302 and out["Location"] == "/"
    assert client.get("/orders/").status_code == 302


def test_a_wrong_password_is_a_form_error(client, customer):
    response = client.post("/accounts/login/", {"username": customer.email, "password": "wrong"})
    assert response.status_code == 400
    assert "correct email" in response.content.decode().lower() or response.context["form"].non_field_errors()


def test_login_refuses_an_offsite_next(client, customer):
    response = client.post(
        "/accounts/login/", {"username": customer.email, "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_logout_by_get_is_refused(client, customer):
    client.force_login(customer)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/accounts/").status_code == 200


def test_password_change(client, customer):
    client.force_login(customer)
    response = client.post(
        "/accounts/password-change/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password-change/done/"
    customer.refresh_from_db()
    assert customer.check_password(NEW_PASSWORD)
    assert client.get("/accounts/").status_code == 200  # still signed in here


def test_password_change_with_a_wrong_old_password_changes_nothing(client, customer):
    client.force_login(customer)
    response = client.post(
        "/accounts/password-change/",
        {"old_password": "nope", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200 and response.context["form"].errors["old_password"]
    customer.refresh_from_db()
    assert customer.check_password(PASSWORD)


# The reset email itself (sent through the outbox): tests/users/test_passwords.py.


def test_password_reset_for_an_unknown_address_looks_the_same(client, db):
    response = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert mail.outbox == []


@pytest.mark.parametrize("link", ["/accounts/password-reset/abc/def/", "/accounts/password-reset/%00/x-y/"])
def test_a_bad_reset_link_says_so(client, db, link):
    response = client.get(link, follow=True)
    assert response.status_code == 200
    assert "This link no longer works" in response.content.decode()


# --- account page and API keys -------------------------------------------------------------


def test_account_page_lists_keys_and_creates_one_shown_once(client, customer):
    client.force_login(customer)
    api_key_create(user=customer, name="old one")
    page = client.get("/accounts/")
    assert page.status_code == 200 and "old one" in page.content.decode()
    created = client.post("/accounts/keys/", {"name": "shop sync", "scopes": ["read"], "expires_in_days": 30})
    assert created.status_code == 201
    assert created["Cache-Control"] == "no-store"
    new = ApiKey.objects.get(name="shop sync")
    assert new.scopes == ["read"]
    body = created.content.decode()
    key = re.search(r'<code class="key">([^<]+)</code>', body).group(1)
    assert key.startswith(f"sr_{new.prefix}_")
    assert key not in client.get("/accounts/").content.decode()  # never shown again
    assert Client().get("/api/v1/auth/keys", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        {"scopes": ["staff"], "expires_in_days": 30},  # not offered to customers
        {"scopes": ["root"], "expires_in_days": 30},
        {"scopes": [], "expires_in_days": 30},
        {"scopes": ["read"], "expires_in_days": 0},
        {"scopes": ["read"], "expires_in_days": "soon"},
        {"scopes": ["read"], "expires_in_days": 30, "name": "x" * 101},
        {"scopes": ["read"], "expires_in_days": 366},  # over API_KEY_MAX_DAYS
    ],
)
def test_bad_key_forms_create_nothing(client, customer, data):
    client.force_login(customer)
    response = client.post("/accounts/keys/", data)
    assert response.status_code == 400
    assert ApiKey.objects.count() == 0


def test_the_account_page_refuses_a_key_over_the_cap(client, customer, settings):
    settings.API_KEYS_MAX_PER_USER = 1
    api_key_create(user=customer)
    client.force_login(customer)

    response = client.post("/accounts/keys/", {"scopes": ["read"], "expires_in_days": 30})

    assert response.status_code == 409
    assert any("at most 1" in text for text in texts(response))
    assert ApiKey.objects.count() == 1


def test_staff_may_create_a_staff_key_and_see_the_admin_link(client, staff_user):
    client.force_login(staff_user)
    assert 'href="/admin/"' in client.get("/").content.decode()
    response = client.post("/accounts/keys/", {"scopes": ["read", "staff"], "expires_in_days": 1})
    assert response.status_code == 201
    assert ApiKey.objects.get().scopes == ["read", "staff"]


def test_customers_see_no_admin_link(client, customer):
    client.force_login(customer)
    assert 'href="/admin/"' not in client.get("/").content.decode()


def test_revoke_my_key_but_not_someone_elses(client, customer, staff_user):
    mine, _ = api_key_create(user=customer)
    theirs, _ = api_key_create(user=staff_user)
    client.force_login(customer)
    response = client.post(f"/accounts/keys/{mine.prefix}/revoke/")
    assert response.status_code == 302
    mine.refresh_from_db()
    assert mine.revoked_at is not None
    refused = client.post(f"/accounts/keys/{theirs.prefix}/revoke/")
    assert refused.status_code == 302 and any("no such key" in text for text in texts(refused))
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert client.post("/accounts/keys/BAD%00/revoke/").status_code == 404


def test_account_pages_need_a_login(client, db):
    for path in ["/accounts/", "/accounts/password-change/", "/orders/", "/checkout/"]:
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), path


# --- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "signed_in"),
    [
        ("/accounts/signup/", {"email": "x@example.com", "password1": PASSWORD, "password2": PASSWORD}, False),
        ("/accounts/login/", {"username": "customer@example.com", "password": PASSWORD}, False),
        ("/accounts/password-reset/", {"email": "customer@example.com"}, False),
        ("/accounts/logout/", {}, True),
        (
            "/accounts/password-change/",
            {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
            True,
        ),
        ("/accounts/keys/", {"scopes": ["read"], "expires_in_days": 30}, True),
        ("/accounts/keys/{prefix}/revoke/", {}, True),
    ],
)
def test_account_forms_without_a_csrf_token_are_refused(customer, path, data, signed_in):
    api_key, _ = api_key_create(user=customer)
    client = Client(enforce_csrf_checks=True)
    if signed_in:
        client.force_login(customer)
    response = client.post(path.format(prefix=api_key.prefix), data)
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert mail.outbox == []
    assert User.objects.count() == 1 and ApiKey.objects.count() == 1
    api_key.refresh_from_db()
    customer.refresh_from_db()
    assert api_key.revoked_at is None and customer.check_password(PASSWORD)


def test_every_account_form_carries_a_csrf_token(client, customer):
    client.force_login(customer)
    pages = ["/accounts/", "/accounts/password-change/"]
    anonymous = Client()
    for path, who in [
        *((p, client) for p in pages),
        *((p, anonymous) for p in ["/accounts/login/", "/accounts/signup/", "/accounts/password-reset/"]),
    ]:
        body = who.get(path).content.decode()
        posts = [form for form in re.findall(r"<form[^>]*>.*?</form>", body, flags=re.S) if 'method="post"' in form]
        assert posts and all("csrfmiddlewaretoken" in form for form in posts), path
