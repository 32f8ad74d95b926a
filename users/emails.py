"""Password-reset email: enqueued through the outbox in the request's transaction, sent by a task.

`password_reset_email_enqueue` is what users.services calls; the `users.send_password_reset_email`
task calls `password_reset_email_send`. The outbox row (kept in the database, shown in the admin)
holds the user id, the link's domain and protocol and a random reference, never the reset token:
the task makes the token when it sends. The reference gives each request's email a Message-ID that
stays the same when the message is delivered again, so a receiver can drop the repeat.
"""

import uuid

from django.contrib.auth.tokens import default_token_generator
from django.core.mail import EmailMessage
from django.template.loader import render_to_string
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from project.outbox.services import outbox_enqueue, stable_message_id
from users.models import User

SEND_PASSWORD_RESET_EMAIL = "users.send_password_reset_email"  # noqa: S105 (a task name)
SUBJECT_TEMPLATE = "users/password_reset_subject.txt"
BODY_TEMPLATE = "users/password_reset_email.txt"


def password_reset_email_enqueue(*, user_id: int, domain: str, use_https: bool) -> None:
    """Ask for a reset email to this user once the caller's transaction commits (outbox)."""
    outbox_enqueue(
        task=SEND_PASSWORD_RESET_EMAIL,
        kwargs={"user_id": user_id, "domain": domain, "use_https": use_https, "ref": uuid.uuid4().hex},
    )


def password_reset_message_id(*, user_id: int, ref: str) -> str:
    return stable_message_id(f"password-reset.{user_id}.{ref}")


def password_reset_email_send(*, user_id: int, domain: str, use_https: bool, ref: str) -> bool:
    """Mail the user a one-use link to set a new password. False, and nothing sent, if the user no
    longer exists, is inactive or has no usable password.

    Reads only; locks nothing. A message delivered twice sends two emails with one Message-ID (each
    link works until the password changes)."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None or not user.has_usable_password():
        return False
    context = {
        "email": user.email,
        "domain": domain,
        "site_name": domain,
        "uid": urlsafe_base64_encode(force_bytes(user.pk)),
        "user": user,
        "token": default_token_generator.make_token(user),
        "protocol": "https" if use_https else "http",
    }
    subject = "".join(render_to_string(SUBJECT_TEMPLATE, context).splitlines())
    EmailMessage(
        subject=subject,
        body=render_to_string(BODY_TEMPLATE, context),
        to=[user.email],
        headers={"Message-ID": password_reset_message_id(user_id=user.pk, ref=ref)},
    ).send()
    return True
