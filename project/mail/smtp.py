"""Django's SMTP backend with plain-text messages composed directly (see project.mail).

The fast path covers what the shop's own emails are: an `EmailMessage` (not an alternative or
attachment carrier) with a text/plain UTF-8 body, `to` recipients only, ASCII subject and simple
ASCII addresses, and no extra header but Message-ID and Date. Its bytes carry the headers
Django would write (Content-Type, MIME-Version, Content-Transfer-Encoding, Subject, From, To,
Date, Message-ID) with the same values, and the same body; anything outside that shape, or a
header Django would refuse (a line break), is left to Django, which sends or refuses it as ever.
"""

import contextlib
import re
import smtplib
from collections.abc import Iterable, Iterator
from email.utils import formatdate, make_msgid
from functools import lru_cache

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends import smtp
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import sanitize_address
from django.core.mail.utils import DNS_NAME

# A dot-atom local part at a host name: written as it is, no quoting, no encoding.
SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9.-]+\Z")
LEADING_DOT = re.compile(rb"(?m)^\.")  # SMTP's dot-stuffing (RFC 5321 4.5.2)
FAST_HEADERS = frozenset({"message-id", "date"})
HEADER_CHARS = 900  # below RFC 5322's 998 per line, with room for the header's name
FOLD_COLUMNS = 78  # Django (the email package's compat32 policy) folds longer header lines
LINE_CHARS = 249  # a line this long is below 998 bytes whatever its UTF-8 characters


@lru_cache(maxsize=64)
def _sanitized(address: str, encoding: str) -> str:
    return sanitize_address(address, encoding)


def _header_value(value) -> str | None:
    value = str(value)
    if not value.isascii() or "\n" in value or "\r" in value or len(value) > HEADER_CHARS:
        return None
    return value


def _unfolded(name: str, value: str) -> bool:
    """Whether Django would write this header on one line (it folds at FOLD_COLUMNS)."""
    return len(name) + 2 + len(value) <= FOLD_COLUMNS


def compose_plain(message: EmailMessage) -> tuple[str, list[str], bytes] | None:
    """(envelope sender, recipients, message bytes) of a plain message, or None if Django must
    compose it."""
    encoding = message.encoding or settings.DEFAULT_CHARSET
    if (
        type(message) is not EmailMessage
        or message.attachments
        or message.cc
        or message.bcc
        or message.reply_to
        or message.content_subtype != "plain"
        or encoding.lower().replace("_", "-") not in ("utf-8", "utf8")
    ):
        return None
    extra = {}
    for name, value in message.extra_headers.items():
        if name.lower() not in FAST_HEADERS or _header_value(value) is None:
            return None
        extra[name] = str(value)
    names = {name.lower() for name in extra}
    recipients = [address for address in message.to if address]
    if not recipients or not all(isinstance(a, str) and SIMPLE_ADDRESS.match(a) for a in recipients):
        return None
    subject = _header_value(message.subject)
    to = ", ".join(recipients)
    if subject is None or not _unfolded("Subject", subject) or not _unfolded("To", to):
        return None
    if not isinstance(message.from_email, str):
        return None
    sender = _sanitized(message.from_email, encoding)
    if _header_value(sender) is None:
        return None
    body = message.body.replace("\r\n", "\n")
    if any(len(line) > LINE_CHARS and len(line.encode()) > 998 for line in body.split("\n")):
        return None  # Django would switch to quoted-printable
    head = (
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\n"
        f"Content-Transfer-Encoding: {'7bit' if body.isascii() else '8bit'}\r\n"
        f"Subject: {subject}\r\n"
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
    )
    # In Django's order: Date and Message-ID unless given, then the given ones.
    if "date" not in names:
        head += f"Date: {formatdate(localtime=settings.EMAIL_USE_LOCALTIME)}\r\n"
    if "message-id" not in names:
        head += f"Message-ID: {make_msgid(domain=DNS_NAME)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in extra.items()) + "\r\n"
    return sender, recipients, (head + body.replace("\n", "\r\n")).encode()


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP backend; plain messages are composed by `compose_plain` and, when the server
    offers PIPELINING (RFC 2920), sent in two round trips instead of four, or in one each when a
    group goes through `send_each`."""

    def _send(self, email_message):
        composed = compose_plain(email_message)
        if composed is None:
            return super()._send(email_message)
        try:
            send_pipelined(self.connection, *composed)
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True

    def send_each(self, email_messages: Iterable[EmailMessage]) -> Iterator[bool]:
        """Send messages in order over one conversation, yielding for each, once the server has
        accepted it, True (or False: nothing to send, as `send_messages` counts it). A message's
        error is raised at its own turn, and nothing after it is sent.

        Plain messages to a server with PIPELINING take one round trip each: a message's content
        goes out in one write with the next message's MAIL, RCPT and DATA, so its 250 comes back
        with their replies (RFC 2920 3.1 allows message content first in a group). The next
        message's envelope is therefore on the server before this message's result is yielded;
        if the consumer stops there (an error, or it closes the generator), the connection is
        closed inside that DATA, and a server discards a transaction cut short (RFC 5321
        4.1.1.4): it is never delivered. Holds no lock between messages: one consumer per
        backend at a time. With fail_silently, each message goes through `send_messages`.
        """
        if self.fail_silently:
            for message in email_messages:
                yield bool(self.send_messages([message]))
            return
        self.open()
        waiting = None  # the content of a message whose envelope the server took (it is in DATA)
        try:
            for message in email_messages:
                composed = compose_plain(message)
                if composed is None or not _offers_pipelining(self.connection):
                    if waiting is not None:
                        content, waiting = waiting, None
                        _end_data(self.connection, content)
                        yield True
                    yield self._send(message)
                    continue
                sender, recipients, data = composed
                head, previous = (b"", None) if waiting is None else (_content(waiting), waiting)
                waiting = None
                try:
                    self.connection.send(head + _envelope(sender, recipients))
                    if previous is not None:
                        _raise_unless_accepted(self.connection.getreply())  # the previous message's turn
                except BaseException:
                    self._abandon()  # this message's envelope may have put the server in DATA
                    raise
                try:
                    error = _envelope_error(self.connection, sender, recipients)
                except (smtplib.SMTPException, OSError) as exc:  # this message's, not the previous one's
                    self._abandon()
                    error = exc
                if error is None:
                    waiting = data
                if previous is not None:
                    yield True
                if error is not None:
                    raise error
            if waiting is not None:
                content, waiting = waiting, None
                _end_data(self.connection, content)
                yield True
        finally:
            if waiting is not None:
                self._abandon()

    def _abandon(self) -> None:
        """Drop the connection without QUIT: a message cut short in DATA is discarded."""
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.close()
            self.connection = None


def send_each(backend: BaseEmailBackend, email_messages: Iterable[EmailMessage]) -> Iterator[bool]:
    """`EmailBackend.send_each` where the backend has it (pipelined SMTP); any other backend
    sends each message as the consumer reaches it."""
    each = getattr(backend, "send_each", None)
    if each is not None:
        yield from each(email_messages)
        return
    for message in email_messages:
        yield bool(backend.send_messages([message]))


@lru_cache(maxsize=64)
def _quoted(address: str) -> str:
    return smtplib.quoteaddr(address)


def _reset(connection: smtplib.SMTP) -> None:
    """RSET after a refusal, as sendmail does; a connection already gone is the caller's error."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        connection.rset()


def _offers_pipelining(connection: smtplib.SMTP) -> bool:
    connection.ehlo_or_helo_if_needed()
    return bool(connection.does_esmtp and connection.has_extn("pipelining"))


def _envelope(sender: str, recipients: list[str]) -> bytes:
    """MAIL, RCPT (simple addresses, as compose_plain gives them) and DATA, as one write."""
    commands = [f"MAIL FROM:{_quoted(sender)}"]
    commands += [f"RCPT TO:<{recipient}>" for recipient in recipients]
    return "\r\n".join([*commands, "DATA", ""]).encode("ascii")


def _envelope_error(connection: smtplib.SMTP, sender: str, recipients: list[str]) -> smtplib.SMTPException | None:
    """Read the replies to `_envelope`: None once the server waits for the content (354), else
    what sendmail would raise (SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError), with the
    session reset and ready for the next message."""
    mail = connection.getreply()
    refused = {}
    for recipient in recipients:
        code, reply = connection.getreply()
        if code not in (250, 251):
            refused[recipient] = (code, reply)
    data_code, data_reply = connection.getreply()
    if data_code == 354 and (mail[0] != 250 or len(refused) == len(recipients)):
        connection.send(b".\r\n")  # the server took DATA anyway: end the empty message
        connection.getreply()
    if mail[0] != 250:
        _reset(connection)
        return smtplib.SMTPSenderRefused(*mail, sender)
    if len(refused) == len(recipients):
        _reset(connection)
        return smtplib.SMTPRecipientsRefused(refused)
    if data_code != 354:
        _reset(connection)
        return smtplib.SMTPDataError(data_code, data_reply)
    return None


def _content(data: bytes) -> bytes:
    """A message's content as it goes after DATA: dot-stuffed, ended by the lone dot."""
    content = LEADING_DOT.sub(b"..", data)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    return content + b".\r\n"


def _raise_unless_accepted(reply: tuple[int, bytes]) -> None:
    """SMTPDataError unless the reply to a message's end of data is 250."""
    code, text = reply
    if code != 250:
        raise smtplib.SMTPDataError(code, text)


def _end_data(connection: smtplib.SMTP, data: bytes) -> None:
    """Send a message's content and read its reply, resetting the session if it was refused."""
    connection.send(_content(data))
    try:
        _raise_unless_accepted(connection.getreply())
    except smtplib.SMTPDataError:
        _reset(connection)
        raise


def send_pipelined(connection: smtplib.SMTP, sender: str, recipients: list[str], data: bytes) -> None:
    """`connection.sendmail(sender, recipients, data)` (recipients: simple addresses, as
    compose_plain gives them) with MAIL, RCPT and DATA in one write when
    the server offers PIPELINING, raising what sendmail raises (SMTPSenderRefused,
    SMTPRecipientsRefused, SMTPDataError) and leaving the session ready for the next message."""
    if not _offers_pipelining(connection):
        connection.sendmail(sender, recipients, data)
        return
    connection.send(_envelope(sender, recipients))
    error = _envelope_error(connection, sender, recipients)
    if error is not None:
        raise error
    _end_data(connection, data)
