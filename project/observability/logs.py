"""The request id travels in a context variable: set by the middleware or a task, read by logs."""

import logging
import re
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# The Celery message header that carries it to the tasks a request causes (project.celery).
REQUEST_ID_HEADER = "request_id"

_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def clean_request_id(candidate: str | None) -> str:
    """Keep a caller's id when it is safe to echo and log; otherwise make a new one."""
    if candidate and _ACCEPTABLE_ID.match(candidate):
        return candidate
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
