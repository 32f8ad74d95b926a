"""project.mail.smtp: plain messages composed directly say what Django's own composition says,
anything else is Django's, and a real SMTP conversation (pipelined) delivers and refuses as
Django's backend does; a group sent with `send_each` takes one round trip per message, and a
message is reported sent only once the server accepted it."""

import smtplib
from email import message_from_bytes, policy

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection

from project.mail.smtp import compose_plain, send_each
from tests.bench.whole_shop import SmtpSink
from tests.support import wait_for

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


# --- a group in one conversation: one round trip per message ------------------------------------------


def _group(*names: str, second_says: str = "") -> list[EmailMessage]:
    """One plain message per name, to <name>@example.com with Message-ID <name>@example.com; the
    second one's body ends with `second_says`."""
    return [
        EmailMessage(
            f"Message {name}",
            f"body of {name}{second_says if index == 1 else ''}",
            to=[f"{name}@example.com"],
            headers={"Message-ID": f"<{name}@example.com>"},
        )
        for index, name in enumerate(names)
    ]


@pytest.fixture
def backend():
    def connect(sink: SmtpSink):
        connection = get_connection(BACKEND, host="127.0.0.1", port=sink.port)
        connection.open()
        connection.connection.ehlo()
        return connection

    return connect


def test_a_group_takes_one_write_per_message_and_each_is_accepted_before_its_turn_ends(backend, monkeypatch):
    with SmtpSink() as sink:
        connection = backend(sink)
        writes = []
        send = connection.connection.send
        monkeypatch.setattr(connection.connection, "send", lambda data: (writes.append(data), send(data))[1])

        received_at_each_turn = [sink.received() for _ in connection.send_each(_group("a", "b", "c", "d", "e"))]
        assert len(writes) == 6  # MAIL+RCPT+DATA; four times content+MAIL+RCPT+DATA; the last content
        connection.close()

    assert received_at_each_turn == [1, 2, 3, 4, 5]
    assert list(sink.message_ids) == [f"<{name}@example.com>" for name in "abcde"]


def test_a_refused_recipient_stops_the_group_at_its_own_message_and_leaves_the_conversation_usable(backend):
    with SmtpSink(refuse=frozenset({"b@example.com"})) as sink:
        connection = backend(sink)
        stream = connection.send_each(_group("a", "b", "c"))
        assert next(stream) is True
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            next(stream)
        assert connection.send_messages(_group("d")) == 1
        connection.close()

    assert list(sink.message_ids) == ["<a@example.com>", "<d@example.com>"]


def test_content_refused_stops_the_group_at_its_message_and_the_next_one_already_in_data_is_discarded(backend):
    with SmtpSink(reject_marker=b"REJECT ME") as sink:
        connection = backend(sink)
        stream = connection.send_each(_group("a", "b", "c", second_says=" REJECT ME"))
        assert next(stream) is True
        with pytest.raises(smtplib.SMTPDataError) as refused:
            next(stream)
        assert refused.value.smtp_code == 554
        assert connection.connection is None  # dropped inside c's DATA
        wait_for(lambda: sink.abandoned == 1, timeout=5, what="the sink to see the conversation end mid-transaction")

    assert list(sink.message_ids) == ["<a@example.com>"]


def test_a_consumer_that_stops_after_a_turn_never_delivers_the_message_whose_envelope_went_ahead(backend):
    with SmtpSink() as sink:
        connection = backend(sink)
        stream = connection.send_each(_group("a", "b", "c"))
        assert next(stream) is True  # b's MAIL, RCPT and DATA went with a's content
        stream.close()
        wait_for(lambda: sink.abandoned == 1, timeout=5, what="the sink to see the conversation end mid-transaction")

    assert list(sink.message_ids) == ["<a@example.com>"]


def test_a_message_django_composes_goes_between_pipelined_ones_in_order(backend):
    a, c = _group("a", "c")
    bo = EmailMessage("Django's", "body", to=["Bo <bo@example.com>"], headers={"Message-ID": "<bo@example.com>"})
    with SmtpSink() as sink:
        connection = backend(sink)
        assert list(connection.send_each([a, bo, c])) == [True, True, True]
        connection.close()

    assert list(sink.message_ids) == ["<a@example.com>", "<bo@example.com>", "<c@example.com>"]


def test_other_backends_send_each_message_when_the_consumer_reaches_it():
    mail.outbox = []
    stream = send_each(get_connection("django.core.mail.backends.locmem.EmailBackend"), _group("a", "b"))
    assert mail.outbox == []
    assert next(stream) is True
    assert [m.to for m in mail.outbox] == [["a@example.com"]]
    assert list(stream) == [True]
    assert len(mail.outbox) == 2
