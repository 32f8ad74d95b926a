"""Sending email: an SMTP backend for Django that composes plain-text messages itself.

`project.mail.smtp.EmailBackend` is Django's SMTP backend (settings, TLS, timeouts, errors are
Django's) with one change: a plain-text EmailMessage with simple ASCII addresses and subject is
written out directly instead of through the `email` package, which costs about three times the
SMTP conversation itself. Every other message goes through Django unchanged. A group of messages
sent with `send_each` takes one round trip per message when the server offers PIPELINING.
"""
