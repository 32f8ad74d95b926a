from http import HTTPStatus

from project.errors import DomainError


class InvalidTransition(DomainError):
    code = "invalid_transition"
    default_detail = "This order cannot make that move from its current status."


class ReservationExpired(DomainError):
    code = "reservation_expired"
    default_detail = "The time to pay for this order has run out; its stock was released."


class IdempotencyKeyReused(DomainError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used with a different request."


class RequestInFlight(DomainError):
    code = "request_in_flight"
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."


class IdempotencyKeyRequired(DomainError):
    status_code = HTTPStatus.BAD_REQUEST
    code = "idempotency_key_required"
    default_detail = "Send an Idempotency-Key header (a unique string per order, up to 255 characters)."


class NotShippable(DomainError):
    code = "not_shippable"
    default_detail = "These units cannot be shipped: not that many are left to ship from there."


class NotReturnable(DomainError):
    code = "not_returnable"
    default_detail = "These units cannot be returned: not that many were shipped and not yet returned."
