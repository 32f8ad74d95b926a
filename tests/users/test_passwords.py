"""A new password ends the API keys (reset always; change and the admin's form unless unticked), and a
reset's email goes through the outbox: nothing is sent while the request runs, the token never rests in
the outbox table, and the email carries a stable Message-ID."""

import json
import re

import pytest
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from project.outbox.models import OutboxMessage
from tests.conftest import bearer
from tests.project.outbox.support import RelayThread, running_worker
from tests.support import wait_for
from users.models import ApiKey
from users.services import api_key_create
from users.tasks import send_password_reset_email

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase 42"
RESET_TASK = "users.send_password_reset_email"


def key_works(key: str) -> bool:
    return bearer(APIClient(), key).get("/api/v1/auth/keys").status_code == 200


def reset_link(body: str) -> str:
    return re.search(r"https?://[^/\s]+(/accounts/password-reset/\S+/)", body).group(1)


def change_password(client, **extra):
    data = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD, **extra}
    return client.post("/accounts/password-change/", data)


# --- password change ----------------------------------------------------------------------------------------


def test_the_password_change_form_offers_to_revoke_the_keys_ticked(client, customer):
    client.force_login(customer)
    page = client.get("/accounts/password-change/").content.decode()

    assert "Also revoke my API keys" in page
    assert re.search(r'<input type="checkbox" name="revoke_api_keys"[^>]*checked', page)


def test_changing_the_password_with_the_box_ticked_revokes_every_key(client, customer):
    _, first = api_key_create(user=customer)
    _, second = api_key_create(user=customer, scopes=["read"])
    client.force_login(customer)

    response = change_password(client, revoke_api_keys="on")

    assert response.status_code == 302
    assert not key_works(first) and not key_works(second)
    assert not ApiKey.objects.filter(user=customer, revoked_at__isnull=True).exists()
    customer.refresh_from_db()
    assert customer.check_password(NEW_PASSWORD)
    assert client.get("/accounts/").status_code == 200  # the browser session stays signed in


def test_changing_the_password_with_the_box_unticked_keeps_the_keys(client, customer):
    _, key = api_key_create(user=customer)
    client.force_login(customer)

    response = change_password(client)  # an unticked checkbox is not sent

    assert response.status_code == 302
    assert key_works(key)


def test_a_refused_password_change_revokes_nothing(client, customer):
    _, key = api_key_create(user=customer)
    client.force_login(customer)

    response = change_password(client, old_password="wrong", revoke_api_keys="on")

    assert response.status_code == 200 and response.context["form"].errors["old_password"]
    assert key_works(key)


def test_only_the_users_own_keys_are_revoked(client, customer, staff_user):
    _, theirs = api_key_create(user=staff_user)
    client.force_login(customer)

    change_password(client, revoke_api_keys="on")

    assert key_works(theirs)


# --- the admin's change-password form -------------------------------------------------------------------------


def test_the_admins_password_form_revokes_the_users_keys_unless_unticked(admin, customer):
    _, key = api_key_create(user=customer)
    url = f"/admin/users/user/{customer.pk}/password/"
    form = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}

    page = admin.get(url).content.decode()
    kept = admin.post(url, form)
    assert key_works(key)
    revoked = admin.post(url, {**form, "revoke_api_keys": "on"})

    assert "Also revoke this user&#x27;s API keys" in page or "Also revoke this user's API keys" in page
    assert re.search(r'<input type="checkbox" name="revoke_api_keys"[^>]*checked', page)
    assert kept.status_code == revoked.status_code == 302
    assert not key_works(key)
    customer.refresh_from_db()
    assert customer.check_password(NEW_PASSWORD)


# --- password reset -----------------------------------------------------------------------------------------


def test_a_reset_request_enqueues_the_email_and_sends_nothing(client, customer):
    response = client.post("/accounts/password-reset/", {"email": "CUSTOMER@example.com"})

    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert mail.outbox == []
    [message] = OutboxMessage.objects.filter(task=RESET_TASK)
    assert message.kwargs["user_id"] == customer.pk
    assert set(message.kwargs) == {"user_id", "domain", "use_https", "ref"}  # no token, no address


def test_the_reset_task_mails_a_link_that_sets_a_new_password_and_revokes_the_keys(client, customer):
    _, key = api_key_create(user=customer)
    client.post("/accounts/password-reset/", {"email": customer.email})
    message = OutboxMessage.objects.get(task=RESET_TASK)

    assert send_password_reset_email(**message.kwargs) is True

    [email] = mail.outbox
    assert email.to == [customer.email] and "Reset your Stockroom password" in email.subject
    link = reset_link(email.body)
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert token not in json.dumps(message.kwargs)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and form_page.context["validlink"]
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/password-reset/done/"
    customer.refresh_from_db()
    assert customer.check_password(NEW_PASSWORD)
    assert not key_works(key)
    assert not Client().get(link, follow=True).context["validlink"]  # the link works once


def test_a_redelivered_reset_email_keeps_its_message_id(client, customer):
    client.post("/accounts/password-reset/", {"email": customer.email})
    client.post("/accounts/password-reset/", {"email": customer.email})
    first, second = OutboxMessage.objects.filter(task=RESET_TASK).order_by("pk")

    send_password_reset_email(**first.kwargs)
    send_password_reset_email(**first.kwargs)  # the same message delivered again
    send_password_reset_email(**second.kwargs)

    ids = [email.extra_headers.get("Message-ID") or email.message()["Message-ID"] for email in mail.outbox]
    assert ids[0] == ids[1] != ids[2]
    assert all(re.fullmatch(r"<[^<>@\s]+@[^<>@\s:]+>", message_id) for message_id in ids)


@pytest.mark.parametrize("email", ["nobody@example.com", "inactive@example.com", "unusable@example.com"])
def test_a_reset_for_an_address_that_cannot_reset_enqueues_nothing(client, django_user_model, email):
    django_user_model.objects.create_user(email="inactive@example.com", password=PASSWORD, is_active=False)
    django_user_model.objects.create_user(email="unusable@example.com", password=None)

    response = client.post("/accounts/password-reset/", {"email": email})

    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert not OutboxMessage.objects.filter(task=RESET_TASK).exists()
    assert mail.outbox == []


def test_the_reset_task_sends_nothing_to_a_user_who_can_no_longer_reset(client, customer):
    client.post("/accounts/password-reset/", {"email": customer.email})
    message = OutboxMessage.objects.get(task=RESET_TASK)
    customer.is_active = False
    customer.save(update_fields=["is_active"])

    assert send_password_reset_email(**message.kwargs) is False
    assert send_password_reset_email(**{**message.kwargs, "user_id": 999_999}) is False
    assert mail.outbox == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_id": "1", "domain": "testserver", "use_https": False, "ref": "a" * 32},
        {"user_id": 1, "domain": "", "use_https": False, "ref": "a" * 32},
        {"user_id": 1, "domain": "testserver", "use_https": "yes", "ref": "a" * 32},
        {"user_id": 1, "domain": "testserver", "use_https": False, "ref": "not hex"},
    ],
)
def test_the_reset_task_refuses_bad_arguments(customer, kwargs):
    assert send_password_reset_email(**kwargs) is False
    assert mail.outbox == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_reset_email_goes_out_once_through_the_relay_and_a_worker(client, customer):
    mail.outbox = []
    with running_worker(), RelayThread():
        client.post("/accounts/password-reset/", {"email": customer.email})
        wait_for(
            lambda: OutboxMessage.objects.filter(task=RESET_TASK, state=OutboxMessage.State.DONE).exists(),
            timeout=30,
            what="the reset email's outbox message to be done",
        )

    [email] = mail.outbox
    assert email.to == [customer.email] and reset_link(email.body)


def test_the_admins_own_password_change_leads_to_the_page_that_revokes_keys(client, staff_user):
    client.force_login(staff_user)
    api_key_create(user=staff_user, scopes=["read"])

    response = client.get("/admin/password_change/", follow=True)
    changed = client.post(
        "/accounts/password-change/",
        {
            "old_password": "correct horse battery staple",
            "new_password1": "an entirely new passphrase 42",
            "new_password2": "an entirely new passphrase 42",
            "revoke_api_keys": "on",
        },
    )

    assert response.redirect_chain[0][0] == "/accounts/password-change/"
    assert changed.status_code == 302
    assert not ApiKey.objects.filter(user=staff_user, revoked_at__isnull=True).exists()
