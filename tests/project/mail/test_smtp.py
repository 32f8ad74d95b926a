"""project.mail.smtp: plain messages composed directly say what Django's own composition says,
anything else is Django's, and a real SMTP conversation (pipelined) delivers and refuses as
Django's backend does."""

import smtplib
from email import message_from_bytes, policy

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection

from project.mail.smtp import compose_plain
from tests.bench.whole_shop import SmtpSink

BACKEND = "project.mail.smtp.EmailBackend"
FIXED = {"Message-ID": "<outbox.1.2@example.com>", "Date": "Thu, 03 Dec 2026 16:00:00 -0000"}

PLAIN = [
    EmailMessage("Order SR-1: reserved for you", "Hello Ada,\n\nItems:\n  1 x Mug (MUG)", to=["ada@example.com"]),
    EmailMessage("Unicode body", "Hello Zoë,\n.a line starting with a dot\n", to=["z@example.com"], headers=FIXED),
    EmailMessage("Two", "Body\r\nwith CRLF", "Shop <shop@example.com>", ["a@example.com", "b@example.org"]),
    EmailMessage("x" * 69, "the longest subject Django writes on one line", to=["ada@example.com"], headers=FIXED),
]
NOT_PLAIN = [
    EmailMessage("Ünïcode subject", "body", to=["ada@example.com"]),
    EmailMessage("Display name", "body", to=["Ada <ada@example.com>"]),
    EmailMessage("Unicode address", "body", to=["zoë@example.com"]),
    EmailMessage("Copy", "body", to=["ada@example.com"], cc=["bob@example.com"]),
    EmailMessage("Header", "body", to=["ada@example.com"], headers={"X-Tag": "1"}),
    EmailMessage("Long line", "x" * 1200, to=["ada@example.com"]),
    EmailMessage("x" * 70, "a subject Django folds", to=["ada@example.com"]),
    EmailMultiAlternatives("HTML", "body", to=["ada@example.com"], alternatives=[("<p>body</p>", "text/html")]),
]


def _parsed(data: bytes):
    return message_from_bytes(data, policy=policy.default)


@pytest.mark.parametrize("message", PLAIN, ids=lambda m: m.subject[:12])
def test_a_plain_message_says_what_djangos_composition_says(message):
    sender, recipients, data = compose_plain(message)
    django = _parsed(message.message().as_bytes(linesep="\r\n"))
    ours = _parsed(data)

    assert sender == message.from_email
    assert recipients == message.to
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    names = [name for name in django if name not in ("Date", "Message-ID")]
    assert [(n, str(ours[n])) for n in names] == [(n, str(django[n])) for n in names]
    assert bool(ours["Date"]) and bool(ours["Message-ID"])
    if "Message-ID" in message.extra_headers:
        assert ours["Message-ID"] == django["Message-ID"] and ours["Date"] == django["Date"]
    assert ours.get_content() == django.get_content()


@pytest.mark.parametrize("message", NOT_PLAIN, ids=lambda m: m.subject[:12])
def test_anything_else_is_left_to_django(message):
    assert compose_plain(message) is None


def test_a_header_with_a_line_break_is_left_to_django_which_refuses_it():
    message = EmailMessage("Hi\r\nBcc: everyone@example.com", "body", to=["ada@example.com"])
    assert compose_plain(message) is None
    with SmtpSink() as sink, pytest.raises(Exception, match="newlines"):
        get_connection(BACKEND, host="127.0.0.1", port=sink.port).send_messages([message])


def test_messages_go_over_one_pipelined_conversation_and_a_refusal_leaves_it_usable(settings):
    with SmtpSink(refuse=frozenset({"gone@example.com"})) as sink:
        with get_connection(BACKEND, host="127.0.0.1", port=sink.port) as backend:
            sent = backend.send_messages([EmailMessage("One", "1", to=["a@example.com"], headers=FIXED)])
            assert backend.connection.has_extn("pipelining")
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                backend.send_messages([EmailMessage("Refused", "2", to=["gone@example.com"])])
            partly = EmailMessage("Partly", "3", to=["b@example.com", "gone@example.com"])
            sent += backend.send_messages([partly])
            sent += backend.send_messages([EmailMessage("Django's", "4", to=["Bo <bo@example.com>"])])
        assert sent == 3
        assert sink.received() == 3  # the refused message never reached DATA
        assert sink.message_ids["<outbox.1.2@example.com>"] == 1


def test_a_refusal_is_silent_when_the_backend_is_told_so():
    with SmtpSink(refuse=frozenset({"gone@example.com"})) as sink:
        backend = get_connection(BACKEND, host="127.0.0.1", port=sink.port, fail_silently=True)
        assert backend.send_messages([EmailMessage("Refused", "x", to=["gone@example.com"])]) == 0
        assert backend.send_messages([EmailMessage("Fine", "x", to=["a@example.com"])]) == 1
    assert sink.received() == 1
