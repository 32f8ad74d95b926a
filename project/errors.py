"""Domain errors raised by services, and the one error envelope of the API.

Each error carries its status and code; `project.http.error_views` turns it into a response.
409 is for domain conflicts only; lock timeouts and an unreachable database are 503.
"""

from http import HTTPStatus as status

RETRY_AFTER_SECONDS = 1


class DomainError(Exception):
    """A refusal the caller can understand and act on."""

    status_code = status.CONFLICT
    code = "conflict"
    default_detail = "The request conflicts with the current state."

    def __init__(self, detail: str | None = None, *, fields: dict | None = None, extra: dict | None = None):
        self.detail = detail or self.default_detail
        self.fields = fields or {}
        self.extra = extra or {}
        super().__init__(self.detail)


class InvalidInput(DomainError):
    status_code = status.BAD_REQUEST
    code = "invalid"
    default_detail = "Invalid input."


class IdempotencyKeyRequired(DomainError):
    """A write that must carry an Idempotency-Key came without one (each app words its detail)."""

    status_code = status.BAD_REQUEST
    code = "idempotency_key_required"
    default_detail = "Send an Idempotency-Key header: a unique string per request."


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key already used with another request (each app words its detail)."""

    status_code = status.UNPROCESSABLE_ENTITY
    code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used with a different request."


class NotFound(DomainError):
    status_code = status.NOT_FOUND
    code = "not_found"
    default_detail = "Not found."


class VersionConflict(DomainError):
    code = "version_conflict"
    default_detail = "The object was changed by someone else; reload it and try again."


class PreconditionFailed(DomainError):
    status_code = status.PRECONDITION_FAILED
    code = "precondition_failed"
    default_detail = "If-Match does not match the current version."


class PreconditionRequired(DomainError):
    status_code = status.PRECONDITION_REQUIRED
    code = "precondition_required"
    default_detail = "This request needs an If-Match header with the current ETag."


class LockTimeout(DomainError):
    status_code = status.SERVICE_UNAVAILABLE
    code = "lock_timeout"
    default_detail = "The stock is busy right now; retry shortly."


class ServiceUnavailable(DomainError):
    status_code = status.SERVICE_UNAVAILABLE
    code = "service_unavailable"
    default_detail = "A service this request needs is unavailable; retry shortly."


def envelope(code: str, detail: str, fields: dict | None = None, **extra) -> dict:
    return {"error": {"code": code, "detail": detail, "fields": fields or {}, **extra}}
