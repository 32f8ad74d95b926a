"""The whole-shop scenario's own parts: the SMTP sink counts what Django's SMTP backend sends, by
Message-ID, and CPU is read from /proc. (The scenario itself runs in `make bench`.)"""

import os

from django.core.mail import EmailMessage, get_connection
from django.core.mail.utils import DNS_NAME
from django.utils.crypto import get_random_string

from tests.bench.whole_shop import SmtpSink, tree_cpu_seconds


def test_the_sink_accepts_what_django_sends_over_smtp_and_counts_it_by_message_id():
    with SmtpSink() as sink:
        connection = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=sink.port)
        first = f"<{get_random_string(12)}@{DNS_NAME}>"
        second = f"<{get_random_string(12)}@{DNS_NAME}>"
        messages = [
            EmailMessage("Order", "Thanks.\n.\n..", "shop@example.com", ["a@example.com"], headers={"Message-ID": mid})
            for mid in (first, second, first)
        ]
        assert connection.send_messages(messages) == 3

        assert sink.received() == 3
        assert sink.message_ids == {first: 2, second: 1}
        assert sink.twice() == 1


def test_cpu_of_a_process_tree_is_read_from_proc():
    spent = tree_cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # about a tenth of a second of CPU
    assert tree_cpu_seconds(os.getpid()) > spent
